//go:build sdk

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
	"github.com/blauth/blauth/ipc"
)

const (
	// tokenTTL is the life of every access token the fake API issues: short, so that several
	// lifetimes (and the daemon's refreshes, with 80 % left under its min_ttl of half the life)
	// pass in a minute; the daemon gets e2etest.MinTTL, which such tokens can meet.
	tokenTTL = e2etest.TokenTTL
	// workspace holds a bl login session in the bl config every test writes.
	workspace = "acme"
)

// fixture is one test's world: the fake API, a private HOME whose bl config holds a bl login
// session for acme, and the real blauthd serving it.
type fixture struct {
	api  *blaxeltest.Server
	home *e2etest.Home
	d    *e2etest.Daemon
	node string // e2e/node
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureConfig(t, "")
}

// newFixtureConfig is newFixture with blauth's config file holding config, given to the
// daemon with --config ("" none).
func newFixtureConfig(t *testing.T, config string) *fixture {
	t.Helper()
	f := &fixture{node: e2etest.NodeDir(t, moduleRoot), api: e2etest.StartAPI(t, tokenTTL), home: e2etest.NewHome(t)}
	e2etest.CheckNothingLeft(t, f.home)
	const subject, deviceCode = "user-acme", "dc-acme-0001"
	access, refresh := f.api.NewSession(subject, deviceCode)
	f.api.BindSession(subject, workspace)
	f.home.WriteBLConfig(t, "context:\n  workspace: "+workspace+"\n"+
		"workspaces:\n"+
		"- name: "+workspace+"\n"+
		"  credentials:\n"+
		"    access_token: "+access+"\n"+
		"    refresh_token: "+refresh+"\n"+
		fmt.Sprintf("    expires_in: %d\n", int(tokenTTL.Seconds()))+
		"    device_code: "+deviceCode+"\n"+
		"tracking: false\n")
	args := e2etest.DaemonMinTTLArgs()
	if config != "" {
		path := filepath.Join(f.home.Dir, "blauth.yaml")
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	f.d = e2etest.StartDaemon(t, e2etest.DaemonOptions{Bin: bins.Blauthd, Home: f.home, APIURL: f.api.Base, Args: args})
	return f
}

// env is what a user's shell gives the helper: HOME, PATH, the runtime directory, the daemon's
// socket (BLAUTH_NO_SPAWN: the test's daemon, never one started on demand), and no BL_*.
func (f *fixture) env(extra ...string) []string {
	env := append(f.home.HomeEnv(), "XDG_RUNTIME_DIR="+f.home.RuntimeDir, ipc.SocketEnv+"="+f.d.Socket,
		"BLAUTH_NO_SPAWN=1", "DO_NOT_TRACK=1")
	return append(env, extra...)
}

func (f *fixture) script(name string) string { return filepath.Join(f.node, name) }

// daemonToken asks blauthd, over its socket, for acme's token now.
func (f *fixture) daemonToken(t *testing.T) string {
	t.Helper()
	c, err := ipc.Dial(f.d.Socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.DoTimeout(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, workspace), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ipc.ParseToken(resp)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// child is a running process whose stdout lines are read as they come.
type child struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *testkit.SyncBuffer
	done   chan struct{}
	err    error
}

// start runs name with args in the test's work directory. Its stdin stays open until close
// (or the test's end); it is stopped (stdin closed, then SIGKILL after 10 s) when the test ends.
func (f *fixture) start(t *testing.T, env []string, name string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env, cmd.Dir = env, f.home.Work
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, name: filepath.Base(name) + " " + strings.Join(args, " "), cmd: cmd, stdin: stdin,
		lines: make(chan string, 100), stderr: &testkit.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", c.name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not end within 10 s of its stdin closing; killing it", c.name)
			_ = cmd.Process.Kill()
			<-c.done
		}
		if s := c.stderr.String(); s != "" {
			t.Logf("stderr of %s:\n%s", c.name, s)
		}
	})
	return c
}

func (c *child) close() { _ = c.stdin.Close() }

// next decodes the next stdout line into v, waiting at most timeout.
func (c *child) next(v any, timeout time.Duration) {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("%s ended without the line expected (%v); stderr:\n%s", c.name, c.wait(time.Second), c.stderr.String())
		}
		if err := json.Unmarshal([]byte(l), v); err != nil {
			c.t.Fatalf("%s printed %q, not the JSON expected: %v", c.name, l, err)
		}
	case <-time.After(timeout):
		c.t.Fatalf("no line from %s within %s; stderr:\n%s", c.name, timeout, c.stderr.String())
	}
}

// wait waits for the process to end, at most timeout, and returns its exit error.
func (c *child) wait(timeout time.Duration) error {
	c.t.Helper()
	go func() {
		for range c.lines { // drain, so that the process is never blocked on its stdout
		}
	}()
	select {
	case <-c.done:
		return c.err
	case <-time.After(timeout):
		c.t.Fatalf("%s did not end within %s; stderr:\n%s", c.name, timeout, c.stderr.String())
	}
	return nil
}

// runToEnd runs a process to its end, bounded by ctx, and returns the last line of its stdout,
// its stderr, and its exit status. It does not touch the test, so it may run in any goroutine.
func (f *fixture) runToEnd(ctx context.Context, env []string, name string, args ...string) (last, stderr string, code int, err error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = env, f.home.Work
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	if _, isExit := err.(*exec.ExitError); isExit {
		err = nil
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1], errb.String(), code, err
}

// mcpServer starts e2e/node/mcp-server.mjs, which asks the fake API about every request's token,
// and returns it with its URL.
func (f *fixture) mcpServer(t *testing.T) (*child, string) {
	srv := f.start(t, f.env("E2E_API_URL="+f.api.Base), "node", f.script("mcp-server.mjs"))
	var addr struct {
		URL string `json:"url"`
	}
	srv.next(&addr, 60*time.Second)
	return srv, addr.URL
}

// outcome is how a process run by runAsync ended.
type outcome struct {
	last, stderr string
	code         int
	err          error
}

// runAsync runs a process to its end in its own goroutine, bounded by timeout, as runToEnd does.
func (f *fixture) runAsync(timeout time.Duration, env []string, name string, args ...string) <-chan outcome {
	done := make(chan outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var o outcome
		o.last, o.stderr, o.code, o.err = f.runToEnd(ctx, env, name, args...)
		done <- o
	}()
	return done
}
