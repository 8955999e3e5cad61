package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// refreshingDaemon is a daemon serving a service account whose tokens live 6 s and are
// refreshed with half their life left: a new token every 3 s or so.
func refreshingDaemon(t *testing.T) *testDaemon {
	t.Helper()
	api := newAPI(t)
	api.SetTTL(6 * time.Second)
	cc := api.AddClient("sa-id", "sa-secret")
	api.BindClient("sa-id", "acme")
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc},
		Socket: filepath.Join(shortTempDir(t), "blauthd.sock"),
		Mutate: func(c *daemon.Config) { c.RefreshLeft, c.MinTTL, c.Tick = 0.5, 2*time.Second, 100*time.Millisecond }})
	return &testDaemon{td}
}

// jwtExpiry is the exp claim of a token the fake API issued.
func jwtExpiry(t *testing.T, tok string) time.Time {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%q is not a JWT", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct{ Exp int64 }
	if err == nil {
		err = json.Unmarshal(b, &claims)
	}
	if err != nil || claims.Exp == 0 {
		t.Fatalf("the JWT %q has no exp: %v", tok, err)
	}
	return time.Unix(claims.Exp, 0)
}

// bgHelper is a blauth-helper running in the background.
type bgHelper struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startBG starts the helper with args in dir, with env on top of a minimal environment. At the
// end of the test it is interrupted (and killed if it does not end).
func startBG(t *testing.T, env []string, dir string, args ...string) *bgHelper {
	t.Helper()
	h := &bgHelper{cmd: exec.Command(helperBin(), args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	h.cmd.Env = append(baseEnv(t), env...)
	h.cmd.Dir = dir
	h.cmd.Stdout, h.cmd.Stderr = h.stderr, h.stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			_ = h.cmd.Process.Kill()
			<-h.done
		}
	})
	return h
}

// stop sends sig to the helper and returns its exit status once it has ended.
func (h *bgHelper) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	_ = h.cmd.Process.Signal(sig)
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the helper did not end on %v; its output: %q", sig, h.stderr.String())
	}
	return h.cmd.ProcessState.ExitCode()
}

// lines returns the lines of the file at path, waiting until there are at least n.
func waitLines(t *testing.T, h *bgHelper, path string, n int) []string {
	t.Helper()
	var lines []string
	ok := testkit.Eventually(60*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		select {
		case <-h.done:
			return true
		default:
		}
		return len(b) > 0 && len(lines) >= n
	})
	if !ok || len(lines) < n {
		t.Fatalf("waited for %d lines in %s, got %q; the helper's output: %q", n, path, lines, h.stderr.String())
	}
	return lines
}

// gone reports whether no process has pid.
func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// A command under exec --restart is started again for each new token, once, and each run sees
// the token current when it started; SIGTERM to the helper reaches the command, whose status
// the helper exits with, and no run is left behind.
func TestExecRestartRunsOncePerToken(t *testing.T) {
	td := refreshingDaemon(t)
	dir := shortTempDir(t)
	runs := filepath.Join(dir, "runs")
	script := `printf '%s %s %s\n' "$(date +%s)" "$$" "$BL_API_KEY" >> runs; exec sleep 600`
	h := startBG(t, td.SocketEnv(), dir, "exec", "--restart", "--", "sh", "-c", script)
	waitLines(t, h, runs, 3)
	if code := h.stop(t, syscall.SIGTERM); code != 128+int(syscall.SIGTERM) {
		t.Errorf("the helper exited %d after SIGTERM, want %d (the command's status); output %q", code, 128+int(syscall.SIGTERM), h.stderr.String())
	}
	b, _ := os.ReadFile(runs)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	seen := map[string]bool{}
	var lastIssued time.Time
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("run %d wrote %q", i, l)
		}
		at, _ := strconv.ParseInt(f[0], 10, 64)
		pid, _ := strconv.Atoi(f[1])
		tok := f[2]
		if seen[tok] {
			t.Errorf("run %d got the token of an earlier run: restarted without a new token", i)
		}
		seen[tok] = true
		if exp := jwtExpiry(t, tok); !exp.After(time.Unix(at, 0)) {
			t.Errorf("run %d started at %d with a token that expired at %d", i, at, exp.Unix())
		}
		issued, ok := td.API.IssuedAt(tok)
		if !ok || issued.Before(lastIssued) {
			t.Errorf("run %d got a token the API did not issue, or an older one than the run before", i)
		}
		lastIssued = issued
		if !gone(pid) {
			t.Errorf("run %d (pid %d) still runs after the helper ended", i, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if n := td.API.Count("client_credentials"); len(lines) > n {
		t.Errorf("%d runs for %d tokens", len(lines), n)
	}
}

// A command that ignores SIGTERM is killed after --grace, and started again; SIGINT to the
// helper reaches it.
func TestExecRestartKillsAfterGrace(t *testing.T) {
	td := refreshingDaemon(t)
	dir := shortTempDir(t)
	runs := filepath.Join(dir, "runs")
	script := `trap '' TERM; echo "$$ $BL_API_KEY" >> runs; exec sleep 600`
	h := startBG(t, td.SocketEnv(), dir, "exec", "--restart", "--grace", "200ms", "--", "sh", "-c", script)
	lines := waitLines(t, h, runs, 2)
	first, _ := strconv.Atoi(strings.Fields(lines[0])[0])
	if !gone(first) {
		t.Errorf("the first run (pid %d), which ignores SIGTERM, runs beside the second", first)
	}
	if code := h.stop(t, syscall.SIGINT); code != 128+int(syscall.SIGINT) {
		t.Errorf("the helper exited %d after SIGINT, want %d; output %q", code, 128+int(syscall.SIGINT), h.stderr.String())
	}
}

// A command that ends by itself ends the helper, with its status.
func TestExecRestartPassesTheStatus(t *testing.T) {
	td := startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=bl_key-1"}})
	r := runProc(t, proc{env: td.SocketEnv()}, helperBin(), "exec", "--restart", "--", "sh", "-c", `printf %s "$BL_API_KEY"; exit 7`)
	mustCode(t, r, 7)
	if r.stdout != "bl_key-1" {
		t.Errorf("the command saw %q", r.stdout)
	}
}

// Under exec --signal HUP the command is started once; on each new token its file is replaced
// first, then it gets SIGHUP, and what it reads then is a live token. The file is 0600 in a
// 0700 directory under XDG_RUNTIME_DIR, gone after the helper ends.
func TestExecSignalRewritesTheFileThenSignals(t *testing.T) {
	td := refreshingDaemon(t)
	dir := shortTempDir(t)
	rt := shortTempDir(t)
	script := `echo "$$ $BLAUTH_TOKEN_FILE" > where
read_it() { printf '%s %s\n' "$(date +%s)" "$(cat "$BLAUTH_TOKEN_FILE")" >> seen; }
trap read_it HUP
read_it
while :; do sleep 0.1; done`
	h := startBG(t, append(td.SocketEnv(), "XDG_RUNTIME_DIR="+rt), dir, "exec", "--signal", "HUP", "--", "sh", "-c", script)
	lines := waitLines(t, h, filepath.Join(dir, "seen"), 3)
	where, _ := os.ReadFile(filepath.Join(dir, "where"))
	f := strings.Fields(string(where))
	if len(f) != 2 {
		t.Fatalf("the command wrote %q", where)
	}
	pid, _ := strconv.Atoi(f[0])
	file := f[1]
	if filepath.Dir(filepath.Dir(file)) != rt {
		t.Errorf("the token file %s is not in a directory of its own under XDG_RUNTIME_DIR %s", file, rt)
	}
	for p, want := range map[string]os.FileMode{file: 0o600, filepath.Dir(file): 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: want mode %04o, got %v (%v)", p, want, fi.Mode(), err)
		}
	}
	seen := map[string]bool{}
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 {
			t.Fatalf("read %d: %q (an empty file?)", i, l)
		}
		at, _ := strconv.ParseInt(f[0], 10, 64)
		if seen[f[1]] {
			t.Errorf("read %d found the token of an earlier read: signalled before the file changed", i)
		}
		seen[f[1]] = true
		if exp := jwtExpiry(t, f[1]); !exp.After(time.Unix(at, 0)) {
			t.Errorf("read %d at %d found a token that expired at %d", i, at, exp.Unix())
		}
	}
	if code := h.stop(t, syscall.SIGTERM); code != 128+int(syscall.SIGTERM) {
		t.Errorf("the helper exited %d after SIGTERM, want %d; output %q", code, 128+int(syscall.SIGTERM), h.stderr.String())
	}
	if !gone(pid) {
		t.Errorf("the command (pid %d) still runs", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if _, err := os.Stat(filepath.Dir(file)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the token file's directory is still there: %v", err)
	}
}

// A sink file follows every refresh, is 0600, runs --exec after each write, and is gone once
// the sink stops.
func TestSinkFollowsEveryRefresh(t *testing.T) {
	td := refreshingDaemon(t)
	dir := shortTempDir(t)
	sink := filepath.Join(dir, "token.json")
	h := startBG(t, td.SocketEnv(), dir, "sink", "--format", "json", "--exec", `cat "$BLAUTH_SINK" >> log`, sink)
	lines := waitLines(t, h, filepath.Join(dir, "log"), 3)
	if fi, err := os.Lstat(sink); err != nil || fi.Mode() != 0o600 {
		t.Fatalf("the sink: want a regular file of mode 0600, got %v (%v)", fi, err)
	}
	seen := map[string]bool{}
	for i, l := range lines {
		var v watchedToken
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Workspace != "acme" || v.Expiry == nil {
			t.Fatalf("write %d: %q (%v)", i, l, err)
		}
		if seen[v.Token] {
			t.Errorf("write %d repeats a token", i)
		}
		seen[v.Token] = true
		if exp := jwtExpiry(t, v.Token); exp.Unix() != *v.Expiry {
			t.Errorf("write %d says expiry %d, the token %d", i, *v.Expiry, exp.Unix())
		}
	}
	if code := h.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the sink exited %d on SIGTERM; output %q", code, h.stderr.String())
	}
	if _, err := os.Lstat(sink); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the sink file is still there after the sink stopped: %v", err)
	}
}

// With --keep the file stays after the sink stops; --format header writes header lines.
func TestSinkKeep(t *testing.T) {
	td := startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=bl_key-1"}})
	dir := shortTempDir(t)
	sink := filepath.Join(dir, "headers")
	h := startBG(t, td.SocketEnv(), dir, "sink", "--keep", "--format=header", "headers")
	testkit.WaitFor(t, 60*time.Second, "the sink file", func() bool { _, err := os.Stat(sink); return err == nil })
	if code := h.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("the sink exited %d on SIGINT; output %q", code, h.stderr.String())
	}
	b, err := os.ReadFile(sink)
	if want := "X-Blaxel-Authorization: Bearer bl_key-1\nX-Blaxel-Workspace: acme\n"; err != nil || string(b) != want {
		t.Errorf("after the sink stopped with --keep: %q (%v), want %q", b, err, want)
	}
}

// Bad input gets exit 2, a blauth: error line that names the mistake and a hint, and nothing
// is written.
func TestFollowersRefuseBadInput(t *testing.T) {
	t.Setenv(ipc.SocketEnv, filepath.Join(shortTempDir(t), "none", "blauthd.sock"))
	t.Setenv("BLAUTH_NO_SPAWN", "1")
	dir := shortTempDir(t)
	open := filepath.Join(dir, "open")
	sticky := filepath.Join(dir, "sticky")
	for d, mode := range map[string]os.FileMode{open: 0o777, sticky: 0o777 | os.ModeSticky} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("untouched"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"unknown signal", []string{"exec", "--signal", "HUPP", "--", "true"}, `unknown signal "HUPP"`},
		{"restart and signal", []string{"exec", "--restart", "--signal", "HUP", "--", "true"}, "choose one"},
		{"bad grace", []string{"exec", "--restart", "--grace", "soon", "--", "true"}, "--grace takes a positive duration"},
		{"grace without restart", []string{"exec", "--grace", "1s", "--", "true"}, "--grace goes with --restart"},
		{"no command", []string{"exec", "--restart", "--"}, "exec needs a command"},
		{"sink in a world-writable directory", []string{"sink", filepath.Join(open, "tok")}, "can be written by others"},
		{"sink in a sticky world-writable directory", []string{"sink", filepath.Join(sticky, "tok")}, "can be written by others"},
		{"sink at a symlink", []string{"sink", link}, "is a symlink"},
		{"sink format", []string{"sink", "--format", "yaml", filepath.Join(dir, "tok")}, `unknown format "yaml"`},
		{"sink without a path", []string{"sink", "--keep"}, "sink takes one PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runHelper(t, "", tc.args...)
			mustFail(t, r, exitUsage)
			if !strings.Contains(r.stderr, tc.says) {
				t.Errorf("want the error to say %q, got %q", tc.says, r.stderr)
			}
		})
	}
	if b, _ := os.ReadFile(target); string(b) != "untouched" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi, err)
	}
	for _, d := range []string{open, sticky} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("%s holds %d files", d, len(entries))
		}
	}
}
