// Command benchreport runs blauth's benchmarks and writes the report, docs/BENCHMARKS.md:
// the helper's end-to-end latency, the daemon's throughput, token-endpoint requests with and
// without the daemon, source-change-to-served latency, blauth-proxy's overhead and throughput
// against direct requests, memory and binary sizes, each beside a
// reference measured in the same run, and the key lines of the go test benchmarks.
//
// `make bench` runs it after `make build`; it uses bin/blauthd, bin/blauth-helper and
// bin/blauth-proxy as built,
// runs the daemon as its own process against a fake Blaxel API served from this process on
// 127.0.0.1, and builds its reference programs (minclient, directclient, bareserver, bareproxy) with the
// same flags. Every load is bounded in time and count, every child process is stopped on exit,
// on error and on SIGINT or SIGTERM, and all files live in one temporary directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/ipc"
)

type config struct {
	out    string
	bin    string
	quick  bool
	only   map[string]bool // step keys to run; nil: all
	goTool string
}

func (c config) runs(key string) bool { return c.only == nil || c.only[key] }

// bench is one run: the temporary tree, the fake API, the daemon, and what was measured.
type bench struct {
	ctx   context.Context
	cfg   config
	procs procs

	tmp, home, work, proj string
	helper, blauthd       string // bin/ as make build left them
	minclient, direct     string // built here with the same flags
	bareBin, bareProxy    string
	rusage                string

	api        *blaxeltest.Server
	cc         string // the daemon's own service account (BL_CLIENT_CREDENTIALS)
	daemon     *proc
	socket     string
	bare       *proc
	bareSocket string
	daemonUp   time.Time // when blauthd first answered
	answerSize int       // bytes in the daemon's answer to a plain get
	clientEnv  []string  // environment of every client process

	rows     []row
	sections []*section
	failures []string
	started  time.Time

	loadStart, loadEnd string // /proc/loadavg's 1-minute figure
}

func main() { os.Exit(run()) }

func run() int {
	var cfg config
	flag.StringVar(&cfg.out, "out", "docs/BENCHMARKS.md", "write the Markdown report here")
	flag.StringVar(&cfg.bin, "bin", "bin", "directory holding blauthd and blauth-helper, as `make build` leaves them")
	flag.BoolVar(&cfg.quick, "quick", false, "fewer runs and shorter loads, to check the harness (the report is not written)")
	only := flag.String("only", "", "run only these parts, comma-separated: memory,helpermem,latency,throughput,tokens,sources,watch,proxy,coldstart,gotest (the report is not written)")
	flag.Parse()
	if *only != "" {
		cfg.only = map[string]bool{}
		for _, k := range strings.Split(*only, ",") {
			cfg.only[strings.TrimSpace(k)] = true
		}
	}
	cfg.goTool = os.Getenv("GO")
	if cfg.goTool == "" {
		cfg.goTool = "go"
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b := &bench{ctx: ctx, cfg: cfg, started: time.Now(), loadStart: loadAvg()}
	defer b.close()
	if err := b.setup(); err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: error: %v\n", err)
		return 1
	}
	steps := []struct {
		key, name string
		fn        func() error
	}{
		{"memory", "daemon memory", b.memory},
		{"helpermem", "helper memory and binary size", b.helperMemory},
		{"latency", "helper latency", b.latency},
		{"throughput", "daemon throughput", b.throughput},
		{"tokens", "token-endpoint requests", b.tokenRequests},
		{"sources", "source-change latency", b.sourceChange},
		{"watch", "watchers", b.watchBench},
		{"proxy", "proxy overhead and throughput", b.proxyBench},
		{"coldstart", "cold start under socket activation", b.coldStart},
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			break
		}
		if !cfg.runs(s.key) {
			continue
		}
		progress("== %s", s.name)
		if err := s.fn(); err != nil {
			b.failures = append(b.failures, fmt.Sprintf("%s: %v", s.name, err))
			fmt.Fprintf(os.Stderr, "benchreport: %s failed: %v\n", s.name, err)
		}
	}
	// The go test benchmarks run with nothing else alive.
	b.procs.stopAll()
	b.loadEnd = loadAvg()
	if ctx.Err() == nil && cfg.runs("gotest") {
		progress("== go test benchmarks")
		if err := b.goBenchmarks(); err != nil {
			b.failures = append(b.failures, fmt.Sprintf("go test benchmarks: %v", err))
			fmt.Fprintf(os.Stderr, "benchreport: go test benchmarks failed: %v\n", err)
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "benchreport: interrupted; every process it started was stopped")
		return 130
	}

	fmt.Println()
	fmt.Print(table(b.rows))
	if len(b.failures) > 0 {
		fmt.Fprintf(os.Stderr, "\nbenchreport: %d part(s) failed; %s not written:\n  %s\n", len(b.failures), cfg.out, strings.Join(b.failures, "\n  "))
		return 1
	}
	if cfg.quick || cfg.only != nil {
		fmt.Fprintf(os.Stderr, "\nbenchreport: -quick or -only: %s not written\n", cfg.out)
		return 0
	}
	if err := os.WriteFile(cfg.out, []byte(b.markdown()), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: error: %v\n", err)
		return 1
	}
	fmt.Printf("\nwritten to %s in %s\n", cfg.out, time.Since(b.started).Round(time.Second))
	return 0
}

func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchreport: "+format+"\n", a...)
}

// close stops every process, the fake API, and removes the temporary tree.
func (b *bench) close() {
	b.procs.stopAll()
	if b.api != nil {
		b.api.CloseClientConnections()
		b.api.Close()
	}
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

func (b *bench) add(r row) { b.rows = append(b.rows, r) }

// section returns the report section titled title, added after the others when it is new.
func (b *bench) section(title string) *section {
	// The parts of one benchmark (the watchers') share its section: one heading, their bodies
	// one after the other.
	for _, s := range b.sections {
		if s.Title == title {
			return s
		}
	}
	s := &section{Title: title}
	b.sections = append(b.sections, s)
	return s
}

// setup builds the reference programs, starts the fake API and blauthd, and makes one get.
func (b *bench) setup() error {
	if _, err := os.Stat("go.mod"); err != nil {
		return errors.New("run from the repository root (make bench does)")
	}
	var err error
	if b.helper, err = filepath.Abs(filepath.Join(b.cfg.bin, "blauth-helper")); err != nil {
		return err
	}
	b.blauthd, _ = filepath.Abs(filepath.Join(b.cfg.bin, "blauthd"))
	for _, p := range []string{b.helper, b.blauthd} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (run make build first)", err)
		}
	}
	if _, err := exec.LookPath("hyperfine"); err != nil {
		return errors.New("hyperfine is not installed (apt-get install -y hyperfine)")
	}
	// A short path: Unix socket paths are limited to about 100 bytes.
	if b.tmp, err = os.MkdirTemp("", "blbench"); err != nil {
		return err
	}
	b.home = filepath.Join(b.tmp, "home")
	b.work = filepath.Join(b.tmp, "work")
	b.proj = filepath.Join(b.tmp, "proj")
	for _, d := range []string{filepath.Join(b.tmp, "bin"), filepath.Join(b.home, ".blaxel"), b.work, b.proj, filepath.Join(b.tmp, "bare")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}

	progress("building the reference programs with make build's flags")
	build := exec.CommandContext(b.ctx, b.cfg.goTool, "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(b.tmp, "bin")+"/",
		"./internal/benchreport/minclient", "./internal/benchreport/directclient", "./internal/benchreport/bareserver",
		"./internal/benchreport/bareproxy", "./internal/benchreport/rusage")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build reference programs: %v\n%s", err, out)
	}
	b.minclient = filepath.Join(b.tmp, "bin", "minclient")
	b.direct = filepath.Join(b.tmp, "bin", "directclient")
	b.bareBin = filepath.Join(b.tmp, "bin", "bareserver")
	b.bareProxy = filepath.Join(b.tmp, "bin", "bareproxy")
	b.rusage = filepath.Join(b.tmp, "bin", "rusage")

	b.api = blaxeltest.New(2 * time.Hour)
	b.cc = b.api.AddClient("bench-sa", "bench-secret")
	if err := os.WriteFile(b.blConfigPath(), blConfig(0), 0o600); err != nil {
		return err
	}
	b.socket = filepath.Join(b.tmp, "run", "blauthd.sock")
	b.clientEnv = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.home, ipc.SocketEnv + "=" + b.socket, "BLAUTH_NO_SPAWN=1"}
	if err := b.startDaemon(); err != nil {
		return err
	}
	return nil
}

func (b *bench) blConfigPath() string { return filepath.Join(b.home, ".blaxel", "config.yaml") }

// daemonArgs is blauthd's command line in every part of the run.
func (b *bench) daemonArgs() []string {
	return []string{"--socket", b.socket, "--log-format", "json", "--log-level", "warn", "--no-keyring", "--bl-config", b.blConfigPath()}
}

// startDaemon starts bin/blauthd with a service account of the fake API in its environment,
// waits until it answers, and gets its token once (the first exchange).
func (b *bench) startDaemon() error {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.home,
		"BL_API_URL=" + b.api.Base, "BL_WORKSPACE=bench", "BL_CLIENT_CREDENTIALS=" + b.cc}
	p, err := startProc("blauthd", filepath.Join(b.tmp, "blauthd.log"), env, b.work, b.blauthd, b.daemonArgs()...)
	if err != nil {
		return err
	}
	b.procs.add(p)
	b.daemon = p
	if err := waitSocket(b.ctx, p, b.socket, 10*time.Second); err != nil {
		return err
	}
	b.daemonUp = time.Now()
	rc, err := dialRaw(b.socket)
	if err != nil {
		return err
	}
	defer rc.close()
	_ = rc.c.SetDeadline(time.Now().Add(30 * time.Second))
	size, failed, err := rc.do(plainGet)
	if err != nil || failed {
		return fmt.Errorf("first get from blauthd failed (error answer: %v): %v\n%s", failed, err, p.logTail())
	}
	b.answerSize = size
	return nil
}

// startBare starts the bare server answering blocks the size of the daemon's answer.
func (b *bench) startBare() error {
	if b.bare != nil && !b.bare.exited() {
		return nil
	}
	b.bareSocket = filepath.Join(b.tmp, "bare", "bare.sock")
	p, err := startProc("bareserver", filepath.Join(b.tmp, "bareserver.log"), []string{"PATH=" + os.Getenv("PATH")}, b.work,
		b.bareBin, "-socket", b.bareSocket, "-size", fmt.Sprint(b.answerSize))
	if err != nil {
		return err
	}
	b.procs.add(p)
	b.bare = p
	return waitSocket(b.ctx, p, b.bareSocket, 10*time.Second)
}

// plainGet is the request minclient and the load generator send.
var plainGet = []byte("version=1\naction=get\n\n")

// blConfig is the bl CLI config of the run, in bl's current format: one workspace, blws, whose
// API key changes with each edit of the source-change benchmark.
func blConfig(edit int) []byte {
	return fmt.Appendf(nil, `context:
  workspace: blws
workspaces:
- name: blws
  credentials:
    apiKey: "bl-key-%d"
tracking: false
`, edit)
}

// markdown is the whole report.
func (b *bench) markdown() string {
	var m strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&m, format, a...) }
	w("# Benchmarks\n\n")
	w("Generated by `make bench` (`internal/benchreport`); do not edit by hand, run it again. ")
	w("Every figure stands beside a reference measured in the same run, on the same machine.\n\n")
	w("## Machine\n\n")
	for _, l := range b.machine() {
		w("- %s\n", l)
	}
	w("\n## Summary\n\n")
	w("%s\n", table(b.rows))
	w("## How to reproduce\n\n")
	w("```sh\n")
	w("make bench    # = make build, then: go run ./internal/benchreport -out docs/BENCHMARKS.md\n")
	w("go run ./internal/benchreport -only throughput    # one part (memory, helpermem, latency, throughput, tokens, sources, watch, proxy, coldstart, gotest); writes no report\n")
	w("```\n\n")
	w("`make build` is `CGO_ENABLED=0 go build -trimpath -ldflags '-s -w -X main.version=…' -o bin/ ./cmd/blauthd ./cmd/blauth-helper ./cmd/blauth-proxy`; ")
	w("benchreport builds `internal/benchreport/{minclient,directclient,bareserver,bareproxy}` with `CGO_ENABLED=0 go build -trimpath -ldflags '-s -w'`. ")
	w("It runs `bin/blauthd %s` as a separate process, with `HOME`, `BL_API_URL` (the fake API), `BL_WORKSPACE=bench` and ", strings.Join(b.redactedDaemonArgs(), " "))
	w("`BL_CLIENT_CREDENTIALS` (a service account of the fake) in its environment; the fake Blaxel API (`internal/testkit/blaxeltest`, issuing 2-hour JWTs) ")
	w("is an `httptest` server on 127.0.0.1 inside benchreport. Clients run with `BLAUTH_SOCKET` set to the daemon's socket and `BLAUTH_NO_SPAWN=1`. ")
	w("The exact commands of each part are in its section below. Takes about %s.\n\n", time.Since(b.started).Round(10*time.Second))
	for i, s := range b.sections {
		w("## %d. %s\n\n%s\n", i+1, s.Title, strings.TrimRight(s.Body.String(), "\n")+"\n")
	}
	return m.String()
}

func (b *bench) redactedDaemonArgs() []string {
	args := b.daemonArgs()
	out := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, b.tmp, "$TMP")
		out[i] = a
	}
	return out
}

// machine describes where the run happened.
func (b *bench) machine() []string {
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	goVersion := runtime.Version()
	if out, err := exec.Command(b.cfg.goTool, "version").Output(); err == nil {
		goVersion = strings.TrimSpace(string(out))
	}
	hf, _ := exec.Command("hyperfine", "--version").Output()
	ver, _ := exec.Command(b.blauthd, "--version").Output()
	rev, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	return []string{
		fmt.Sprintf("CPU: %s, %d cores (GOMAXPROCS %d)", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0)),
		fmt.Sprintf("OS: %s %s, kernel %s", runtime.GOOS, runtime.GOARCH, strings.TrimSpace(string(kernel))),
		"Go: " + goVersion,
		"hyperfine: " + strings.TrimSpace(string(hf)),
		fmt.Sprintf("blauth: %s (tree %s)", strings.TrimSpace(string(ver)), strings.TrimSpace(string(rev))),
		"Date: " + b.started.UTC().Format("2006-01-02 15:04 MST"),
		fmt.Sprintf("Load average (1 min) when the run started: %s; before the go test benchmarks: %s. Other work on the machine during the run adds noise to every timing; ratios are measured under the same conditions.", b.loadStart, b.loadEnd),
	}
}

// loadAvg is the 1-minute load average.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	if f := strings.Fields(string(data)); len(f) > 0 {
		return f[0]
	}
	return "unknown"
}
