package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blauth/blauth/ipc"
)

// ErrAlreadyRunning reports that another daemon serves the socket.
var ErrAlreadyRunning = errors.New("another blauthd is already running")

// socketLock is held for the daemon's life, so that two daemons started together cannot both
// decide the socket is stale and remove each other's.
type socketLock struct{ f *os.File }

func lockSocketDir(socketPath string) (*socketLock, error) {
	p := socketPath + ".lock"
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w%s (it holds %s)", ErrAlreadyRunning, holder(f), p)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	// The holder's pid, for the message a second daemon prints.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &socketLock{f}, nil
}

// holder names the pid written in a lock file another daemon holds, as " as pid N".
func holder(f *os.File) string {
	b := make([]byte, 16)
	n, _ := f.ReadAt(b, 0)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n]))); err == nil && pid > 0 {
		return fmt.Sprintf(" as pid %d", pid)
	}
	return ""
}

func (l *socketLock) release() {
	_ = os.Remove(l.f.Name())
	l.f.Close()
}

// Listen creates the daemon's socket: its directory private (0700, ours), a live socket left
// alone (ErrAlreadyRunning, naming its daemon's pid), a stale one replaced, and the new one
// created with mode 0600. release drops the lock that keeps a second daemon from taking the
// socket over; call it after the listener is closed.
func Listen(path string) (ln net.Listener, release func(), err error) {
	if err := ipc.PrepareSocketDir(filepath.Dir(path)); err != nil {
		return nil, nil, err
	}
	if c, err := ipc.Dial(path, time.Second); err == nil {
		pid := ""
		if resp, err := c.Do(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionPing)); err == nil {
			pid = " as pid " + resp.Value(ipc.KeyPID)
		}
		c.Close()
		return nil, nil, fmt.Errorf("%w%s on %s", ErrAlreadyRunning, pid, path)
	}
	lock, err := lockSocketDir(path)
	if err != nil {
		return nil, nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			lock.release()
			return nil, nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		if err := os.Remove(path); err != nil {
			lock.release()
			return nil, nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		lock.release()
		return nil, nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		lock.release()
		return nil, nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return l, lock.release, nil
}
