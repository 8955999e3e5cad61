package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

const latencyTarget = 1.3

type hfCommand struct {
	name, cmdline string
}

type hfResult struct {
	name  string
	times []float64 // ms, sorted
	cpu   float64   // mean user+system CPU time of a run, ms
}

func (r hfResult) q(p float64) float64 { return quantile(r.times, p) }

// hyperfine runs the commands in the given order (all runs of one before the next) with no
// shell, and returns each command's run times.
func (b *bench) hyperfine(tag string, warmup, runs int, env []string, cmds ...hfCommand) ([]hfResult, string, error) {
	out := filepath.Join(b.tmp, "hyperfine-"+tag+".json")
	args := []string{"-N", "--warmup", fmt.Sprint(warmup), "--runs", fmt.Sprint(runs), "--style", "none", "--export-json", out}
	shown := []string{"hyperfine", "-N", "--warmup", fmt.Sprint(warmup), "--runs", fmt.Sprint(runs), "--export-json", tag + ".json"}
	for _, c := range cmds {
		args = append(args, "-n", c.name, c.cmdline)
		shown = append(shown, "-n", c.name, "'"+b.display(c.cmdline)+"'")
	}
	cmd := exec.CommandContext(b.ctx, "hyperfine", args...)
	cmd.Env, cmd.Dir = env, b.work
	if o, err := cmd.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("hyperfine: %v\n%s", err, o)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, "", err
	}
	var doc struct {
		Results []struct {
			Command   string    `json:"command"`
			Times     []float64 `json:"times"`
			User      float64   `json:"user"`
			System    float64   `json:"system"`
			ExitCodes []int     `json:"exit_codes"`
		} `json:"results"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, "", fmt.Errorf("hyperfine's JSON: %w", err)
	}
	if len(doc.Results) != len(cmds) {
		return nil, "", fmt.Errorf("hyperfine's JSON holds %d results for %d commands", len(doc.Results), len(cmds))
	}
	res := make([]hfResult, len(cmds))
	for i, r := range doc.Results {
		for _, code := range r.ExitCodes {
			if code != 0 {
				return nil, "", fmt.Errorf("%s exited with status %d", cmds[i].name, code)
			}
		}
		t := make([]float64, len(r.Times))
		for j, s := range r.Times {
			t[j] = s * 1000
		}
		slices.Sort(t)
		res[i] = hfResult{name: cmds[i].name, times: t, cpu: (r.User + r.System) * 1000}
	}
	return res, strings.Join(shown, " "), nil
}

// display shortens the run's temporary paths for the report.
func (b *bench) display(s string) string {
	s = strings.ReplaceAll(s, filepath.Join(b.tmp, "bin"), "$TMP/bin")
	s = strings.ReplaceAll(s, filepath.Dir(b.helper), "bin")
	return s
}

// latency measures blauth-helper token against minclient with hyperfine, in both orders.
func (b *bench) latency() error {
	s := b.section("Helper end-to-end latency, cached token")
	warmup, runs := 50, 1000
	if b.cfg.quick {
		warmup, runs = 5, 100
	}
	helper := hfCommand{"blauth-helper", b.helper + " token"}
	minimal := hfCommand{"minclient", b.minclient}
	orders := [][]hfCommand{{helper, minimal}, {minimal, helper}}
	s.printf("Exec to token on stdout, measured by hyperfine without a shell (`-N`), %d warm-up and %d measured runs per command, ", warmup, runs)
	s.printf("in both orders (hyperfine runs every run of one command before the next). Both get the same cached service-account JWT ")
	s.printf("from the same `bin/blauthd`. `minclient` (`internal/benchreport/minclient`) is the least a Go program can do: dial ")
	s.printf("`$BLAUTH_SOCKET`, send `version=1`, `action=get`, read the answer to its empty line, print the token. `blauth-helper token` also ")
	s.printf("sends its working directory and `BL_*` variables, so the daemon checks the caller's `.env` (none here). ")
	s.printf("Quantiles are nearest-rank over hyperfine's `times`. Environment: `BLAUTH_SOCKET`, `BLAUTH_NO_SPAWN=1`, `HOME`, `PATH`. ")
	s.printf("The target (≤ %.1f×) applies to the p50 ratio in each order; p99 is shown beside it. CPU is hyperfine's mean user plus system ", latencyTarget)
	s.printf("time of a run (all the process's threads), which other work on the machine disturbs less than wall time.\n\n")
	s.printf("| Order | Command | p50 | p90 | p99 | mean | min | max | CPU (user+sys) per run |\n|---|---|---|---|---|---|---|---|---|\n")
	var cmdlines []string
	var helperP50, helperCPU, minCPU float64
	for i, order := range orders {
		res, cmdline, err := b.hyperfine(fmt.Sprintf("order%d", i+1), warmup, runs, b.clientEnv, order...)
		if err != nil {
			return err
		}
		cmdlines = append(cmdlines, cmdline)
		var h, m hfResult
		for _, r := range res {
			if r.name == helper.name {
				h = r
			} else {
				m = r
			}
			s.printf("| %d: %s first | %s | %s | %s | %s | %s | %s | %s | %s |\n", i+1, order[0].name, r.name, ms(r.q(0.5)), ms(r.q(0.9)), ms(r.q(0.99)),
				ms(mean(r.times)), ms(r.times[0]), ms(r.times[len(r.times)-1]), ms(r.cpu))
		}
		if i == 0 {
			helperP50 = h.q(0.5)
		}
		helperCPU += h.cpu / float64(len(orders))
		minCPU += m.cpu / float64(len(orders))
		label := fmt.Sprintf("order %d, %s first", i+1, order[0].name)
		b.add(row{What: "Helper latency p50 (" + label + ")", Figure: ms(h.q(0.5)), Ref: "minclient " + ms(m.q(0.5)),
			Ratio: ratio(h.q(0.5), m.q(0.5)), Target: "≤ 1.3×", Verdict: verdict(h.q(0.5)/m.q(0.5) <= latencyTarget)})
		b.add(row{What: "Helper latency p99 (" + label + ")", Figure: ms(h.q(0.99)), Ref: "minclient " + ms(m.q(0.99)),
			Ratio: ratio(h.q(0.99), m.q(0.99)), Target: "(information)"})
	}
	b.add(row{What: "Helper CPU (user+sys) per run, mean of both orders", Figure: ms(helperCPU), Ref: "minclient " + ms(minCPU),
		Ratio: ratio(helperCPU, minCPU), Target: "(information)"})
	s.printf("\nCommands (run in `$TMP/work`; `$TMP/bin` holds the programs benchreport built):\n\n")
	for i, c := range cmdlines {
		s.printf("- order %d: `%s`\n", i+1, c)
	}

	// For information: a process that exchanges the credential itself on every run, as `bl token`
	// does, against the loopback fake API.
	bwarm, bruns := 10, 200
	if b.cfg.quick {
		bwarm, bruns = 2, 20
	}
	env := append(slices.Clone(b.clientEnv), "BL_API_URL="+b.api.Base, "BL_CLIENT_CREDENTIALS="+b.cc)
	before := b.api.Count("client_credentials")
	res, cmdline, err := b.hyperfine("bltoken", bwarm, bruns, env, hfCommand{"directclient", b.direct}, minimal)
	if err != nil {
		return err
	}
	exchanges := b.api.Count("client_credentials") - before
	d, m := res[0], res[1]
	b.add(row{What: "Simulated `bl token` p50 (exchanges on every run)", Figure: ms(d.q(0.5)) + " (helper: " + ms(helperP50) + ")",
		Ref: "minclient " + ms(m.q(0.5)), Ratio: ratio(d.q(0.5), m.q(0.5)), Target: "(information)"})
	s.printf("\nFor information, `directclient` stands in for `bl token`, which calls the API on every run: a Go program (net/http, ")
	s.printf("encoding/json) that POSTs the client-credentials grant in Blaxel's JSON dialect to the fake API on 127.0.0.1 and prints ")
	s.printf("the access token (%d exchanges reached the fake during this measurement). The fake answers from benchreport's process; ", exchanges)
	s.printf("a real API adds its network round trip.\n\n")
	s.printf("| Command | p50 | p90 | p99 | mean | CPU (user+sys) per run |\n|---|---|---|---|---|---|\n")
	for _, r := range res {
		s.printf("| %s | %s | %s | %s | %s | %s |\n", r.name, ms(r.q(0.5)), ms(r.q(0.9)), ms(r.q(0.99)), ms(mean(r.times)), ms(r.cpu))
	}
	s.printf("\n`%s` (with `BL_API_URL` and `BL_CLIENT_CREDENTIALS` set)\n", cmdline)
	return nil
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var t float64
	for _, x := range xs {
		t += x
	}
	return t / float64(len(xs))
}
