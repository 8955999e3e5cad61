package e2etest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// NodeDir returns e2e/node under moduleRoot once node and the pinned packages
// (node_modules, installed by `npm ci` from .ci/install-deps.sh) are there. When they are not,
// the test fails in CI and is skipped elsewhere (see Missing).
func NodeDir(t testing.TB, moduleRoot string) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		Missing(t, "node", "install Node.js 18 or later, or run .ci/install-deps.sh")
	}
	dir := filepath.Join(moduleRoot, "e2e", "node")
	for _, pkg := range []string{"@blaxel/core", "@modelcontextprotocol/sdk", "@modelcontextprotocol/inspector-cli"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			Missing(t, "e2e/node/node_modules/"+pkg, "run `npm ci` in e2e/node, or .ci/install-deps.sh")
		}
	}
	return dir
}

// NodeOptions describe one Node process running a script of e2e/node.
type NodeOptions struct {
	Script string   // path of the script
	Args   []string // the script's arguments
	Home   *Home    // HOME, and the working directory (Home.Work) unless Dir is set
	Dir    string   // working directory; the SDK reads ./.env and ./blaxel.toml from it
	// Env is added to Home.HomeEnv() and DO_NOT_TRACK=1 (the SDK's telemetry off).
	Env []string
	// Via, when set, is a command that runs node in its place, e.g. {helper, "exec", "--"}: the
	// process is then Via[0] with Via[1:], "node", Script and Args as its arguments.
	Via []string
}

// SDKResult is the one JSON line a one-call script (list-models.mjs) prints.
type SDKResult struct {
	OK     bool   `json:"ok"`
	Status int    `json:"status"`
	Error  string `json:"error"`
	Models int    `json:"models"`
	At     int64  `json:"at"` // ms since the epoch when the call began
}

// CallTime is when the call began.
func (r SDKResult) CallTime() time.Time { return time.UnixMilli(r.At) }

// NodeRun is a finished Node process.
type NodeRun struct {
	Result   SDKResult
	ExitCode int
	Stdout   string
	Stderr   string
	Started  time.Time
	Elapsed  time.Duration
}

// nodeCmd builds the command for o.
func nodeCmd(ctx context.Context, o NodeOptions) *exec.Cmd {
	argv := append(append(append([]string{}, o.Via...), "node", o.Script), o.Args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(append(o.Home.HomeEnv(), "DO_NOT_TRACK=1"), o.Env...)
	cmd.Dir = o.Dir
	if cmd.Dir == "" {
		cmd.Dir = o.Home.Work
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// RunNode runs a one-call script to its end (bounded by ctx; callers give it a deadline) and
// parses its JSON line. It does not touch the test, so it may run in any goroutine; an error
// means the process could not run or printed no result line.
func RunNode(ctx context.Context, o NodeOptions) (NodeRun, error) {
	run, err := RunNodeJSON(ctx, o, nil)
	if err != nil {
		return run, err
	}
	if run.Result.OK != (run.ExitCode == 0) {
		return run, fmt.Errorf("node %s: result ok=%v but exit status %d", filepath.Base(o.Script), run.Result.OK, run.ExitCode)
	}
	return run, nil
}

// RunNodeJSON runs a script to its end (bounded by ctx) and decodes the last line of its
// standard output, a JSON value, into result, or into the run's Result (an SDKResult) when
// result is nil. Like RunNode it may run in any goroutine. When ctx ends first the process is
// killed (after a grace period of 5 s) and its exit status is -1. An error means the process
// could not run or its last line is not JSON; a non-zero exit status is for the caller to judge.
func RunNodeJSON(ctx context.Context, o NodeOptions, result any) (NodeRun, error) {
	cmd := nodeCmd(ctx, o)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	run := NodeRun{Started: time.Now()}
	err := cmd.Run()
	run.Elapsed = time.Since(run.Started)
	run.Stdout, run.Stderr = stdout.String(), stderr.String()
	if cmd.ProcessState != nil {
		run.ExitCode = cmd.ProcessState.ExitCode()
	}
	line := bytes.TrimSpace(stdout.Bytes())
	if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if result == nil {
		result = &run.Result
	}
	if jerr := json.Unmarshal(line, result); jerr != nil {
		return run, fmt.Errorf("node %s printed no result line (exit %v): %v\nstdout: %s\nstderr: %s",
			filepath.Base(o.Script), err, jerr, stdout.String(), stderr.String())
	}
	return run, nil
}

// CallAtEnv is the variable that makes list-models.mjs wait, once the SDK is loaded, until at
// before it calls.
func CallAtEnv(at time.Time) string {
	return "E2E_CALL_AT_MS=" + strconv.FormatInt(at.UnixMilli(), 10)
}
