package e2etest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blauth/blauth/ipc"
)

// Activated is a blauthd started the way systemd's socket unit starts it: the harness holds the
// listening socket, and starts the real daemon binary with that socket (LISTEN_FDS=1, fd 3)
// when a client connects while no daemon runs, again after every exit. Clients connecting
// in between wait in the socket's backlog, so a daemon that stops (blauth-helper stop, a crash,
// an upgrade) comes back on the next connection: what a client that reconnects meets on a
// desktop with blauthd.socket enabled.
type Activated struct {
	t      testing.TB
	o      DaemonOptions
	Socket string
	ln     *net.UnixListener
	file   *os.File // the listening socket, passed to each daemon as fd 3
	log    *lineLog
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	cmd     *exec.Cmd // the daemon running now, or nil
	exited  chan struct{}
	pids    []int
	exitOf  map[int]chan struct{} // pid → closed when that daemon has exited
	failure error                 // a daemon that exited badly
}

// StartActivated listens on $XDG_RUNTIME_DIR/blauth/blauthd.sock of o.Home and starts a daemon
// (o.Bin, with the flags and environment StartDaemon gives) at the first connection and after
// each exit. It does not wait for one: the first client's connection starts it. When the test
// ends it stops the running daemon (SIGTERM, SIGKILL after 15 s), closes and removes the socket,
// and fails the test if a daemon exited with an error.
func StartActivated(t testing.TB, o DaemonOptions) *Activated {
	t.Helper()
	dir := filepath.Join(o.Home.RuntimeDir, "blauth")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, ipc.SocketName)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatalf("listen on %s: %v", socket, err)
	}
	ln.SetUnlinkOnClose(true)
	f, err := ln.File()
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	a := &Activated{t: t, o: o, Socket: socket, ln: ln, file: f, log: &lineLog{t: t, prefix: "blauthd: "},
		stop: make(chan struct{}), done: make(chan struct{}), exitOf: map[int]chan struct{}{}}
	t.Cleanup(a.close)
	go a.loop()
	return a
}

// loop starts a daemon whenever a connection waits and none runs.
func (a *Activated) loop() {
	defer close(a.done)
	for {
		select {
		case <-a.stop:
			return
		default:
		}
		a.mu.Lock()
		running := a.cmd != nil
		exited := a.exited
		a.mu.Unlock()
		if running {
			select {
			case <-a.stop:
				return
			case <-exited:
			}
			continue
		}
		fds := []unix.PollFd{{Fd: int32(a.file.Fd()), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			a.fail(fmt.Errorf("poll the listening socket: %w", err))
			return
		}
		if n > 0 {
			if err := a.start(); err != nil {
				a.fail(err)
				return
			}
		}
	}
}

// start runs one daemon on the held socket. LISTEN_PID must be the daemon's own pid, which
// only the child knows: a shell sets it to its $$ and execs the daemon in its place.
func (a *Activated) start() error {
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`, a.o.Bin}, a.o.args()...)...)
	cmd.Env = a.o.env(a.Socket, "LISTEN_FDS=1", "LISTEN_FDNAMES="+ipc.SocketName)
	cmd.Dir = a.o.Home.Work
	cmd.ExtraFiles = []*os.File{a.file}
	cmd.Stdout, cmd.Stderr = a.log, a.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start blauthd: %w", err)
	}
	exited := make(chan struct{})
	a.mu.Lock()
	a.cmd, a.exited = cmd, exited
	a.pids = append(a.pids, cmd.Process.Pid)
	a.exitOf[cmd.Process.Pid] = exited
	a.mu.Unlock()
	a.t.Logf("socket activation: started blauthd %d on %s", cmd.Process.Pid, a.Socket)
	go func() {
		err := cmd.Wait()
		a.mu.Lock()
		a.cmd = nil
		if err != nil && a.failure == nil {
			select {
			case <-a.stop: // stopped by close: judged there
			default:
				a.failure = fmt.Errorf("blauthd %d exited: %v", cmd.Process.Pid, err)
			}
		}
		a.mu.Unlock()
		close(exited)
	}()
	return nil
}

func (a *Activated) fail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failure == nil {
		a.failure = err
	}
}

// Pids lists the daemons started so far, in order.
func (a *Activated) Pids() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int(nil), a.pids...)
}

// Log returns what every daemon logged so far.
func (a *Activated) Log() string { return a.log.String() }

// StopDaemon asks the running daemon to stop (action=stop, as blauth-helper stop does) and
// waits up to 15 s for it to exit. Its pid is returned. The next connection starts another.
func (a *Activated) StopDaemon(t testing.TB) int {
	t.Helper()
	c, err := ipc.Dial(a.Socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionStop))
	c.Close()
	if err != nil {
		t.Fatalf("stop blauthd: %v", err)
	}
	pid, _ := strconv.Atoi(resp.Value(ipc.KeyPID))
	a.mu.Lock()
	exited, ok := a.exitOf[pid]
	a.mu.Unlock()
	if !ok {
		t.Fatalf("the daemon that answered stop is pid %q, not one this harness started (%v)", resp.Value(ipc.KeyPID), a.Pids())
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("blauthd %d did not exit within 15 s of stop", pid)
	}
	return pid
}

// close stops the activation loop and the running daemon, and removes the socket.
func (a *Activated) close() {
	close(a.stop)
	<-a.done
	a.mu.Lock()
	cmd, exited := a.cmd, a.exited
	a.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			if cmd.ProcessState != nil && !cmd.ProcessState.Success() {
				a.t.Errorf("blauthd %d exited with %v after SIGTERM", cmd.Process.Pid, cmd.ProcessState)
			}
		case <-time.After(15 * time.Second):
			a.t.Errorf("blauthd %d did not stop within 15s of SIGTERM; killing it", cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	a.file.Close()
	a.ln.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failure != nil {
		a.t.Error(a.failure)
	}
}
