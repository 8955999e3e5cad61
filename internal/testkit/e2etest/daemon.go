package e2etest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// DaemonArgsEnv names the variable whose flags StartDaemon adds to every daemon's.
const DaemonArgsEnv = "BLAUTH_E2E_DAEMON_ARGS"

// DaemonOptions describe one blauthd process.
type DaemonOptions struct {
	Bin    string // the blauthd binary
	Home   *Home
	APIURL string   // BL_API_URL (the fake's Base)
	Args   []string // more flags, after the harness's own
	Env    []string // more environment
}

// Daemon is a running blauthd binary. Its log (JSON lines) goes to the test log as it is written,
// and is kept for Log.
type Daemon struct {
	t      testing.TB
	cmd    *exec.Cmd
	Socket string
	done   chan struct{}
	err    error
	log    *lineLog
}

// StartDaemon starts blauthd with --log-format json and --no-keyring (these suites are about the
// bl config and the environment; without a session bus, a keyring lookup would start a
// dbus-daemon that outlives the test), in the environment a user session gives it: HOME,
// XDG_RUNTIME_DIR, BL_API_URL and BLAUTH_SOCKET. It waits until the daemon answers a ping on its
// socket, and stops it (SIGTERM, then SIGKILL after 15 s) when the test ends.
//
// The flags in $BLAUTH_E2E_DAEMON_ARGS (split on spaces) come last: they let a run try a daemon
// setting on a whole suite, e.g. BLAUTH_E2E_DAEMON_ARGS='--refresh-left 0.6'.
func StartDaemon(t testing.TB, o DaemonOptions) *Daemon {
	t.Helper()
	socket := filepath.Join(o.Home.RuntimeDir, "blauth", ipc.SocketName)
	args := o.args()
	cmd := exec.Command(o.Bin, args...)
	cmd.Env = o.env(socket)
	cmd.Dir = o.Home.Work
	d := &Daemon{t: t, cmd: cmd, Socket: socket, done: make(chan struct{}), log: &lineLog{t: t, prefix: "blauthd: "}}
	cmd.Stdout = d.log
	cmd.Stderr = d.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start blauthd: %v", err)
	}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(d.Stop)
	if err := d.waitReady(15 * time.Second); err != nil {
		t.Fatalf("blauthd did not come up: %v", err)
	}
	t.Logf("blauthd %d serving on %s (args %s)", cmd.Process.Pid, socket, strings.Join(args, " "))
	return d
}

// args are the daemon's flags: the harness's own, o.Args, then those in $BLAUTH_E2E_DAEMON_ARGS.
func (o DaemonOptions) args() []string {
	args := append([]string{"--log-format", "json", "--no-keyring"}, o.Args...)
	return append(args, strings.Fields(os.Getenv(DaemonArgsEnv))...)
}

// env is the daemon's environment: o.Home's, XDG_RUNTIME_DIR, BLAUTH_SOCKET=socket, then more,
// BL_API_URL when o has one, and o.Env.
func (o DaemonOptions) env(socket string, more ...string) []string {
	env := append(o.Home.HomeEnv(), "XDG_RUNTIME_DIR="+o.Home.RuntimeDir, ipc.SocketEnv+"="+socket)
	env = append(env, more...)
	if o.APIURL != "" {
		env = append(env, "BL_API_URL="+o.APIURL)
	}
	return append(env, o.Env...)
}

func (d *Daemon) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.done:
			return fmt.Errorf("blauthd exited: %v", d.err)
		default:
		}
		if c, err := ipc.Dial(d.Socket, time.Second); err == nil {
			_, err = c.Do(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionPing))
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on %s within %s", d.Socket, timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Log returns what the daemon has logged so far.
func (d *Daemon) Log() string { return d.log.String() }

// Stop sends SIGTERM and waits up to 15 s for a clean exit (status 0), then kills it. It fails
// the test when the daemon does not stop cleanly. Safe to call more than once.
func (d *Daemon) Stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if d.err != nil {
			d.t.Errorf("blauthd exited with %v after SIGTERM", d.err)
		}
	case <-time.After(15 * time.Second):
		d.t.Errorf("blauthd did not stop within 15s of SIGTERM; killing it")
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// lineLog writes each complete line to the test log and keeps everything.
type lineLog struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	all    bytes.Buffer
	part   []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.t.Log(l.prefix + string(l.part[:i]))
		l.part = l.part[i+1:]
	}
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}
