//go:build reliability

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

const (
	nobodyUID = 65534
	nobodyGID = 65534
)

// shortDir is a fresh directory under the system temp dir, removed at the end of the test: Unix
// socket paths must stay under ~104 bytes, which t.TempDir() can exceed.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "rel")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// daemonOpts describes one blauthd process.
type daemonOpts struct {
	api    *fakeAPI // BL_API_URL points at it when set
	env    []string // more environment (BL_* sources)
	args   []string // more flags
	home   string   // $HOME; a fresh one when empty
	socket string   // --socket; a fresh one when empty
	// asNobody runs the daemon as nobody:nogroup through setpriv.
	asNobody bool
	// prefix, when set, is a command that execs the daemon's command line given as its
	// arguments (it must keep the pid: exec, not fork).
	prefix []string
	// noWait returns without waiting for the daemon to answer (it may be meant to fail).
	noWait bool
}

// daemon is one blauthd process, with its log file. Cleanup kills it if it still runs.
type daemon struct {
	t       testing.TB
	cmd     *exec.Cmd
	pid     int
	socket  string
	home    string
	logPath string
	done    chan struct{}
	exitErr error
}

var logSeq atomic.Int64

func logFile(t testing.TB, what string) (string, *os.File) {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	p := filepath.Join(logDir, fmt.Sprintf("%03d-%s-%s.log", logSeq.Add(1), name, what))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	run.log(p)
	return p, f
}

// startDaemon starts blauthd with --log-format json at debug level (every line it can write is
// searched for secrets at the end), without the OS keyring, and waits until it answers a ping.
func startDaemon(t testing.TB, o daemonOpts) *daemon {
	t.Helper()
	base := ""
	if o.home == "" || o.socket == "" {
		base = shortDir(t)
	}
	if o.home == "" {
		o.home = filepath.Join(base, "home")
		if err := os.MkdirAll(o.home, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if o.socket == "" {
		o.socket = filepath.Join(base, "run", "blauthd.sock")
	}
	logPath, lf := logFile(t, "blauthd")
	defer lf.Close()
	args := append([]string{"--socket", o.socket, "--log-format", "json", "--log-level", "debug", "--no-keyring"}, o.args...)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + o.home, "TZ=UTC"}
	if o.api != nil {
		env = append(env, "BL_API_URL="+o.api.Base)
	}
	env = append(env, o.env...)
	var cmd *exec.Cmd
	switch {
	case o.asNobody:
		cmd = exec.Command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", blauthdBin}, args...)...)
	case len(o.prefix) > 0:
		argv := append(append(append([]string{}, o.prefix...), blauthdBin), args...)
		cmd = exec.Command(argv[0], argv[1:]...)
	default:
		cmd = exec.Command(blauthdBin, args...)
	}
	cmd.Env = env
	cmd.Dir = o.home
	cmd.Stderr = lf
	cmd.Stdout = lf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start blauthd: %v", err)
	}
	d := &daemon{t: t, cmd: cmd, pid: cmd.Process.Pid, socket: o.socket, home: o.home, logPath: logPath, done: make(chan struct{})}
	go func() { d.exitErr = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", logPath, tail(logPath, 30))
		}
	})
	if !o.noWait {
		if err := d.waitReady(10 * time.Second); err != nil {
			t.Fatalf("blauthd did not come up: %v\n%s", err, tail(logPath, 30))
		}
	}
	return d
}

// waitReady waits until the daemon answers a ping, or exits.
func (d *daemon) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.done:
			return fmt.Errorf("blauthd exited: %v", d.exitErr)
		default:
		}
		if c, err := ipc.Dial(d.socket, time.Second); err == nil {
			_, err = c.Do(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionPing))
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on %s within %s", d.socket, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exited reports whether the process has ended.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the process to end and returns its exit code (-1 if killed by a signal).
func (d *daemon) waitExit(timeout time.Duration) (int, error) {
	select {
	case <-d.done:
	case <-time.After(timeout):
		return 0, fmt.Errorf("still running after %s", timeout)
	}
	return d.cmd.ProcessState.ExitCode(), nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill() {
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.t.Errorf("blauthd %d survived SIGKILL for 10s", d.pid)
	}
}

// stop sends SIGTERM and waits (bounded) for a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code, err := d.waitExit(15 * time.Second); err != nil {
		d.t.Errorf("blauthd did not stop on SIGTERM: %v", err)
		d.kill()
	} else if code != 0 {
		d.t.Errorf("blauthd exited with %d after SIGTERM", code)
	}
}

// get asks for a token on a new connection.
func (d *daemon) get(kv ...string) (*ipc.Token, error) {
	return getOn(d.socket, 35*time.Second, kv...)
}

func getOn(socket string, timeout time.Duration, kv ...string) (*ipc.Token, error) {
	c, err := ipc.Dial(socket, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return doGet(c, timeout, kv...)
}

func doGet(c *ipc.Client, timeout time.Duration, kv ...string) (*ipc.Token, error) {
	req := ipc.NewMessage(append([]string{ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet}, kv...)...)
	resp, err := c.DoTimeout(req, timeout)
	if err != nil {
		return nil, err
	}
	tok, err := ipc.ParseToken(resp)
	if err == nil {
		run.secret("served token", tok.Token)
	}
	return tok, err
}

// mustServe asserts that the daemon serves workspace ws a valid token from api (or, when
// wantKey is set, exactly that API key) with at least minLeft of life.
func (d *daemon) mustServe(t testing.TB, api *fakeAPI, ws string, minLeft time.Duration, wantKey string) *ipc.Token {
	t.Helper()
	tok, err := d.get(ipc.KeyWorkspace, ws)
	now := time.Now()
	if err != nil {
		t.Fatalf("the daemon no longer serves %s: %v (code %s)", ws, err, ipc.ErrorCode(err))
	}
	if wantKey != "" {
		if tok.Token != wantKey {
			t.Fatalf("%s: served a different API key", ws)
		}
		return tok
	}
	if err := api.checkToken(tok.Token, tok.Expiry, now, minLeft); err != nil {
		t.Fatalf("%s: %v", ws, err)
	}
	return tok
}

// logHas reports whether a line of the daemon's log holds every one of subs.
func (d *daemon) logHas(subs ...string) bool {
	data, _ := os.ReadFile(d.logPath)
	for _, line := range strings.Split(string(data), "\n") {
		ok := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				ok = false
				break
			}
		}
		if ok && line != "" {
			return true
		}
	}
	return false
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procStats is what /proc says about a process.
type procStats struct {
	RSSKiB  int
	Threads int
	FDs     int
}

func readProc(pid int) (procStats, error) {
	var s procStats
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			s.RSSKiB, _ = strconv.Atoi(fields[0])
		case "Threads":
			s.Threads, _ = strconv.Atoi(fields[0])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	return s, nil
}

func (s procStats) String() string {
	return fmt.Sprintf("rss=%.1fMiB threads=%d fds=%d", float64(s.RSSKiB)/1024, s.Threads, s.FDs)
}

// helperResult is one run of blauth-helper.
type helperResult struct {
	code           int
	stdout, stderr string
}

// runHelper runs blauth-helper with args against socket, in dir, with a bounded time. prefix
// (setpriv …) runs it as another user.
func runHelper(t testing.TB, socket, dir string, env []string, prefix []string, helper string, args ...string) helperResult {
	t.Helper()
	r, err := tryHelper(socket, dir, env, prefix, helper, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryHelper is runHelper for any goroutine: it returns what went wrong instead of failing.
func tryHelper(socket, dir string, env []string, prefix []string, helper string, args ...string) (helperResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	argv := append(append(append([]string{}, prefix...), helper), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "BLAUTH_SOCKET=" + socket, "BLAUTH_NO_SPAWN=1"}, env...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		return helperResult{}, fmt.Errorf("%v did not finish within 40s", argv)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return helperResult{}, fmt.Errorf("run %v: %w", argv, err)
	}
	r := helperResult{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
	recordHelperStderr(r.stderr)
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		run.secret("served token", line)
	}
	return r, nil
}

var helperLog struct {
	sync.Mutex
	f *os.File
}

// recordHelperStderr appends a helper's stderr to the run's helper log, which is searched for
// secrets like the daemons' logs.
func recordHelperStderr(s string) {
	if s == "" {
		return
	}
	helperLog.Lock()
	defer helperLog.Unlock()
	if helperLog.f == nil {
		p := filepath.Join(logDir, "helpers-stderr.log")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			panic(err)
		}
		helperLog.f = f
		run.log(p)
	}
	_, _ = helperLog.f.WriteString(s)
}

// waitFor polls cond every step until it holds or timeout passes.
func waitFor(timeout, step time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(step)
	}
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

// rawGet sends a get on an open connection and reads the answer, with a 10s bound.
func rawGet(c net.Conn, r *bufio.Reader, kv ...string) (*ipc.Token, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	req := ipc.NewMessage(append([]string{ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet}, kv...)...)
	if err := ipc.WriteMessage(c, req); err != nil {
		return nil, err
	}
	resp, err := ipc.ReadMessage(r)
	if err != nil {
		return nil, err
	}
	tok, err := ipc.ParseToken(resp)
	if err == nil {
		run.secret("served token", tok.Token)
	}
	return tok, err
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
