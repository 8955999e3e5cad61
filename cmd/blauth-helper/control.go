package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blauth/blauth/ipc"
)

// controlRequest is a request of action with the keys and values kv, carrying no caller.
func controlRequest(action string, kv ...string) *ipc.Message {
	return ipc.NewMessage(append([]string{ipc.KeyVersion, ipc.Version, ipc.KeyAction, action}, kv...)...)
}

func (a *app) noArgs(args []string) int {
	if len(args) > 0 {
		return a.usageError(fmt.Sprintf("%s takes no argument, got %q", a.cmd, args[0]))
	}
	return exitOK
}

// jsonFlag reads the arguments of a command that takes --json and nothing else: whether
// --json was given, or the usage error's exit status.
func (a *app) jsonFlag(args []string) (asJSON bool, code int) {
	for _, arg := range args {
		if arg != "--json" {
			if len(arg) > 0 && arg[0] == '-' {
				return false, a.usageError(unknownFlag(arg, []string{"--json"}))
			}
			return false, a.usageError(fmt.Sprintf("unexpected argument %q", arg))
		}
		asJSON = true
	}
	return asJSON, exitOK
}

// cmdPing says which daemon answers. It never starts one: a ping that did would always succeed.
func (a *app) cmdPing(args []string) int {
	if code := a.noArgs(args); code != exitOK {
		return code
	}
	resp, err := a.call(controlRequest(ipc.ActionPing), simpleTimeout, false)
	if err != nil {
		return a.fail(err)
	}
	fmt.Fprintf(a.stdout, "blauthd %s (pid %s) on %s\n", resp.Value(ipc.KeyDaemonVersion), resp.Value(ipc.KeyPID), a.socket)
	return exitOK
}

func (a *app) cmdReload(args []string) int {
	if code := a.noArgs(args); code != exitOK {
		return code
	}
	if _, err := a.call(controlRequest(ipc.ActionReload), simpleTimeout, true); err != nil {
		return a.fail(err)
	}
	return exitOK
}

// cmdStop stops the daemon on the helper's socket and waits until it is gone. Nothing that
// follows a daemon (watch, the client libraries, blauth-proxy) starts one: the stop holds until
// a command needs a daemon, and the message says so. A daemon that systemd's socket unit
// started is started again by the next connection, a follower's included: the message says how
// to stop that.
func (a *app) cmdStop(args []string) int {
	if code := a.noArgs(args); code != exitOK {
		return code
	}
	c, err := a.dial(false)
	if errors.Is(err, ipc.ErrUnreachable) {
		fmt.Fprintf(a.stderr, "blauth: no blauthd answers on %s: nothing to stop\n", a.socket)
		return exitOK
	}
	if err != nil {
		return a.fail(err)
	}
	defer c.Close()
	resp, err := do(c, controlRequest(ipc.ActionStop), simpleTimeout)
	if ipc.ErrorCode(err) == ipc.CodeUnknownAction {
		// A daemon older than action=stop: ask its pid and signal it, as systemd would.
		resp, err = a.stopByPID(c)
	}
	if err != nil {
		return a.fail(err)
	}
	pid, _ := strconv.Atoi(resp.Value(ipc.KeyPID))
	if resp.Value(ipc.KeyManager) == ipc.ManagerSystemd {
		fmt.Fprintf(a.stderr, "blauth: stopped blauthd (pid %d); its systemd socket unit starts it again on the next connection, a waiting watch's or client's included: 'systemctl --user stop blauthd.socket' stops that\n", pid)
		return exitOK
	}
	// Done when the process is gone, not merely its socket: it finishes requests in flight
	// after it stops listening.
	for deadline := time.Now().Add(15 * time.Second); running(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return a.fail(fmt.Errorf("blauthd (pid %d) still runs 15s after it was asked to stop", pid))
		}
	}
	fmt.Fprintf(a.stderr, "blauth: stopped blauthd (pid %d); it will not start again until a command needs it (the next 'blauth-helper token', or socket activation); watches and clients wait for it\n", pid)
	return exitOK
}

// running reports whether process pid exists and is not a zombie waiting to be reaped.
func running(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no /proc (macOS): kill(pid, 0) is all there is
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) == 0 || (f[0] != "Z" && f[0] != "X")
}

func (a *app) stopByPID(c *ipc.Client) (*ipc.Message, error) {
	resp, err := do(c, controlRequest(ipc.ActionPing), simpleTimeout)
	if err != nil {
		return nil, err
	}
	pid, err := strconv.Atoi(resp.Value(ipc.KeyPID))
	if err != nil || pid <= 1 {
		return nil, errors.New("the daemon did not say its pid")
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return nil, fmt.Errorf("signal blauthd (pid %d): %w", pid, err)
	}
	return resp, nil
}
