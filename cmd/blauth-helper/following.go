package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blauth/blauth/ipc"
)

// followTokens follows workspace's token for exec --restart, exec --signal and sink, which got
// their first token from a get (which may start a daemon): it never starts one. It puts each
// token whose value differs from last on latest, a channel of capacity one that holds only the
// newest (an older token not yet taken is dropped: only the current one matters). An error the
// daemon reports, and a lost daemon, are said once on stderr, as watch says them, and the
// following goes on. It returns when ctx ends (nil) or the daemon is older than watch.
func (a *app) followTokens(ctx context.Context, workspace, last string, latest chan *ipc.Token) error {
	req, err := a.request(ipc.ActionWatch, workspace)
	if err != nil {
		return err
	}
	return a.follow(ctx, req, "a running "+a.cmd+" never starts one", func(t *ipc.Token) error {
		if !ipc.ValidValue(t.Token) || !ipc.ValidValue(t.Workspace) {
			return errors.New("the daemon sent a token or workspace holding CR, LF or NUL; refusing it")
		}
		if t.Token != last {
			last = t.Token
			select {
			case <-latest: // drop the older token nobody took yet
			default:
			}
			latest <- t // the one sender: the channel has room now
		}
		return nil
	})
}

// following is a followTokens run in the background, until stop.
type following struct {
	latest chan *ipc.Token // the newest token not taken yet
	done   chan struct{}   // closed when followTokens has returned
	err    error           // what it returned, once done is closed
	cancel context.CancelFunc
}

// startFollowing follows workspace's token from last (the value already in hand) on.
func (a *app) startFollowing(workspace, last string) *following {
	ctx, cancel := context.WithCancel(a.ctx)
	f := &following{latest: make(chan *ipc.Token, 1), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(f.done)
		f.err = a.followTokens(ctx, workspace, last, f.latest)
	}()
	return f
}

// stop ends the following and waits until it has ended.
func (f *following) stop() {
	f.cancel()
	<-f.done
}

// oldDaemonHint is the hint for a daemon too old to follow.
const oldDaemonHint = "restart it with 'blauth-helper stop': the next command starts the installed version"

// defaultGrace is how long a child has to end after SIGTERM before it gets SIGKILL.
const defaultGrace = 10 * time.Second

// child is a command run in a process group of its own, so that stopping it stops whatever it
// started too.
type child struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed once it has ended and been reaped
	stopped bool          // stop ran: its group is gone, its id may be another's
}

// startChild starts path with argv and env, stdin (nil: none), and the helper's stdout and stderr.
func (a *app) startChild(path string, argv, env []string, stdin io.Reader) (*child, error) {
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Stdin: stdin, Stdout: a.stdout, Stderr: a.stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the status is in cmd.ProcessState
		close(c.done)
	}()
	return c, nil
}

// signal sends sig to the child alone.
func (c *child) signal(sig syscall.Signal) { _ = c.cmd.Process.Signal(sig) }

// signalGroup sends sig to the child's process group: the child and what it started.
func (c *child) signalGroup(sig syscall.Signal) { _ = syscall.Kill(-c.cmd.Process.Pid, sig) }

// stop ends the child: SIGTERM to its group, SIGKILL to the group if it has not ended after
// grace; then SIGKILL to whatever of the group is left, so that nothing outlives it. A nil
// child, or one stopped already, is left alone.
func (c *child) stop(grace time.Duration) {
	if c == nil || c.stopped {
		return
	}
	c.stopped = true
	select {
	case <-c.done:
	default:
		c.signalGroup(syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-c.done:
			t.Stop()
		case <-t.C:
			c.signalGroup(syscall.SIGKILL)
			<-c.done
		}
	}
	c.signalGroup(syscall.SIGKILL)
}

// status is the child's exit status as a shell reports it: its code, or 128+N for signal N.
func (c *child) status() int {
	ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return c.cmd.ProcessState.ExitCode()
}

// parseSignal reads a signal's name (HUP, SIGHUP, hup) or number.
func parseSignal(s string) (syscall.Signal, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return syscall.Signal(n), n > 0 && n < 65
	}
	name := s
	if len(name) > 3 && strings.EqualFold(name[:3], "SIG") {
		name = name[3:]
	}
	for _, sig := range namedSignals {
		if strings.EqualFold(sig.name, name) {
			return sig.sig, true
		}
	}
	return 0, false
}

// namedSignals are the signals exec --signal takes by name.
var namedSignals = []struct {
	name string
	sig  syscall.Signal
}{{"HUP", syscall.SIGHUP}, {"INT", syscall.SIGINT}, {"QUIT", syscall.SIGQUIT}, {"TERM", syscall.SIGTERM},
	{"USR1", syscall.SIGUSR1}, {"USR2", syscall.SIGUSR2}, {"ALRM", syscall.SIGALRM}, {"WINCH", syscall.SIGWINCH},
	{"CONT", syscall.SIGCONT}}

// writeFileAtomic replaces path with data, mode 0600: a new file beside it (os.CreateTemp: 0600,
// O_EXCL, which never follows a symlink), synced, then renamed over path, so that a reader sees
// the old content or the new, whole, and a symlink at path is replaced, never followed.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
