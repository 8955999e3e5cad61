package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// statusLinearTarget is the most the time per workspace of a status may grow from 1,000 to
// 20,000 workspaces.
const statusLinearTarget = 1.5

// statusCounts is how many times each status benchmark runs; its rows are the median.
const statusCounts = 5

// goBenchPackages are the packages whose go test benchmarks the report includes.
var goBenchPackages = []string{"./ipc/", "./sources/...", "./daemon/"}

// benchLine is one parsed result line of go test -bench.
type benchLine struct {
	name    string // without the -GOMAXPROCS suffix
	metrics map[string]float64
}

// parseBenchLines reads the result lines of go test -bench output: a name, an iteration count,
// then value-unit pairs.
func parseBenchLines(out string) map[string]benchLine {
	res := map[string]benchLine{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		bl := benchLine{name: name, metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				bl.metrics[f[i+1]] = v
			}
		}
		res[name] = bl
	}
	return res
}

// goBenchmarks runs the go test benchmarks of the wire format, the sources and the daemon,
// and reports their key lines.
func (b *bench) goBenchmarks() error {
	benchtime := "300ms"
	if b.cfg.quick {
		benchtime = "50ms"
	}
	args := append([]string{"test", "-run", "^$", "-bench", ".", "-skip", "^BenchmarkStatus$", "-benchmem", "-benchtime", benchtime, "-count", "1", "-timeout", "5m"}, goBenchPackages...)
	// A status of 20,000 workspaces takes about 100 ms, so 300 ms of it is three: the status
	// rows are the median of statusCounts runs of their own.
	statusArgs := []string{"test", "-run", "^$", "-bench", "^BenchmarkStatus$", "-benchmem", "-benchtime", benchtime, "-count", strconv.Itoa(statusCounts), "-timeout", "5m", "./daemon/"}
	var out []byte
	for _, a := range [][]string{args, statusArgs} {
		o, err := exec.CommandContext(b.ctx, b.cfg.goTool, a...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(a, " "), err, o)
		}
		out = append(out, o...)
	}
	lines := parseBenchLines(string(out))
	var keep []string
	statusNs := map[string][]float64{} // ns/workspace of each run, by benchmark
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Benchmark") || strings.HasPrefix(l, "pkg:") {
			keep = append(keep, strings.TrimRight(l, " \t"))
		}
		for name, bl := range parseBenchLines(l) {
			if v, ok := bl.metrics["ns/workspace"]; ok {
				statusNs[name] = append(statusNs[name], v)
			}
		}
	}
	for name, vs := range statusNs {
		slices.Sort(vs)
		lines[name].metrics["ns/workspace"] = vs[len(vs)/2]
	}

	get := func(name, metric string) (float64, bool) {
		v, ok := lines[name].metrics[metric]
		return v, ok
	}
	if during, ok1 := get("BenchmarkGetDuringRefresh", "p99-µs"); ok1 {
		if none, ok2 := get("BenchmarkGetNoRefresh", "p99-µs"); ok2 {
			d50, _ := get("BenchmarkGetDuringRefresh", "p50-µs")
			n50, _ := get("BenchmarkGetNoRefresh", "p50-µs")
			b.add(row{What: "Get latency while a refresh is in flight, p50 (go test, in-process)", Figure: fmt.Sprintf("%.1f µs", d50),
				Ref: fmt.Sprintf("no refresh %.1f µs", n50), Ratio: ratio(d50, n50), Target: "no wait on the refresh"})
			b.add(row{What: "Get latency while a refresh is in flight, p99 (go test, in-process)", Figure: fmt.Sprintf("%.1f µs", during),
				Ref: fmt.Sprintf("no refresh %.1f µs", none), Ratio: ratio(during, none), Target: "no wait on the refresh (the refresh is held for minutes)",
				Verdict: verdict(during < 100_000)})
		}
	}
	if with, ok1 := get("BenchmarkManyClientsOneDay", "requests/day"); ok1 {
		without, _ := get("BenchmarkManyClientsOneDay", "requests-without/day")
		b.add(row{What: "Token requests over 24 h, 200 clients, one credential (go test, injected clock)", Figure: fmt.Sprintf("%.0f", with),
			Ref: fmt.Sprintf("clients on their own %.0f", without), Ratio: ratio(with, without), Target: "one per refresh period (≈ 30-35)",
			// A 2-hour token is refreshed with 60-65 % of its life left (broker.DefaultRefreshLeft
			// plus jitter): every 42-48 minutes, 30-34 a day, plus the first.
			Verdict: verdict(with >= 30 && with <= 35)})
	}

	if small, ok1 := get("BenchmarkStatus/workspaces=1000", "ns/workspace"); ok1 {
		if large, ok2 := get("BenchmarkStatus/workspaces=20000", "ns/workspace"); ok2 {
			b.add(row{What: "Status, time per workspace, 20,000 workspaces in the bl config (go test, in-process)", Figure: fmt.Sprintf("%.1f µs", large/1000),
				Ref: fmt.Sprintf("1,000 workspaces %.1f µs", small/1000), Ratio: ratio(large, small), Target: fmt.Sprintf("≤ %.1f×", statusLinearTarget),
				Verdict: verdict(large <= statusLinearTarget*small)})
		}
	}

	s := b.section("go test benchmarks")
	s.printf("`go test -run '^$' -bench . -benchmem -benchtime %s -count 1 %s` (GOMAXPROCS %d). ", benchtime, strings.Join(goBenchPackages, " "), runtime.GOMAXPROCS(0))
	s.printf("What they measure:\n\n")
	s.printf("- `ipc`: encoding and decoding a helper's get request and the daemon's answer (a ~330-byte JWT), with allocations.\n")
	s.printf("- `sources`: `ParseDotenv` on a 15-line project `.env`; `ParseBLConfig` on a 5-workspace config in bl's format; `Resolve` ")
	s.printf("of a request whose `.env` is cached and watched (serial and from every core), against one answered from the daemon's environment. ")
	s.printf("`BenchmarkWatchLatency` (the watcher alone, rename-save to callback) belongs to the sources package's own tests.\n")
	s.printf("- `daemon`: `BenchmarkGetCached`, a get of a cached service-account token through a real socket to an in-process daemon ")
	s.printf("from 8 persistent connections (allocations count both sides); `BenchmarkGetDuringRefresh` against `BenchmarkGetNoRefresh`, one ")
	s.printf("caller's get latency while the background refresh of its token is held by the fake endpoint for minutes (`SetHang` + ")
	s.printf("`FaultHang`, token past its refresh point on an injected clock; the benchmark checks the refresh was in flight throughout), ")
	s.printf("and with none; `BenchmarkManyClientsOneDay`, 24 simulated hours (injected clock, a step a minute) of 200 clients each asking ")
	s.printf("every minute, counting the fake's token requests through one broker (`requests/day`) and with each client refreshing ")
	s.printf("on its own as the Go SDK does, at 20%% of the lifetime left (`requests-without/day`); `BenchmarkStatus`, ")
	s.printf("one status request on a new connection to a daemon whose bl config holds 1,000 or 20,000 workspaces (each a name and an API key, ")
	s.printf("so that 20,000 fit the 1 MiB the daemon reads of a bl config), with the client's JSON decoding; `ns/workspace` is its time over ")
	s.printf("the workspaces listed, and the table's figure the median of %d runs of its own (`-count %d`: at 20,000 a status takes about ", statusCounts, statusCounts)
	s.printf("100 ms, so one run of %s is a handful of them: two runs of the same code gave 5.6 and 3.9 µs per workspace). ", benchtime)
	s.printf("Growing slices was 23%% of the CPU of both sizes together (`-cpuprofile`), of which the daemon's list of workspaces 27%% and ")
	s.printf("its answer's encoding buffer 10%% (the client's JSON decoder 34%%): the list is now made at its length and the answer ")
	s.printf("encoded into one buffer sized first. A workspace was found in the bl config by a search through its list, once or twice per workspace listed: ")
	s.printf("20.8 µs per workspace at 1,000 and 334 µs at 20,000 (16×). The daemon's view of the bl config now indexes its workspaces by ")
	s.printf("name when it is read (`blconfig.View`).\n\n")
	s.printf("```\n%s\n```\n", strings.Join(keep, "\n"))
	return nil
}
