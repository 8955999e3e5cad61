package keyring

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/blauth/blauth/ipc"
)

// CheckSessionBus reports whether the OS keyring can be tried at all, without touching the
// keyring library: on Linux and the BSDs, a D-Bus session bus must be there (the address in
// DBUS_SESSION_BUS_ADDRESS, or a socket at $XDG_RUNTIME_DIR/bus, which is then put in
// DBUS_SESSION_BUS_ADDRESS for the process) and accept a connection within timeout. It returns
// an error matching ErrNoSessionBus when it does not: blauthd then runs without the keyring and
// says so once, rather than failing every keyring call. An address with a transport other than
// unix: is taken as it is. On macOS and Windows it returns nil.
func CheckSessionBus(timeout time.Duration) error {
	if err := ensureSessionBus(); err != nil {
		return err
	}
	addr := os.Getenv("DBUS_SESSION_BUS_ADDRESS")
	if addr == "" {
		return nil // macOS, Windows
	}
	var firstErr error
	for _, a := range strings.Split(addr, ";") {
		network, target, ok := busDialTarget(a)
		if !ok {
			return nil // a transport this check does not dial: let the library try it
		}
		c, err := net.DialTimeout(network, target, timeout)
		if err == nil {
			c.Close()
			return nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr == nil {
		return nil
	}
	var oe *net.OpError
	if errors.As(firstErr, &oe) && oe.Err != nil {
		firstErr = oe.Err
	}
	return &busError{fmt.Sprintf("the D-Bus session bus %s does not answer (%v)", ipc.Clip(addr, 120), firstErr)}
}

// NoSecretService reports whether err, from a Keyring call, says that the session bus has no
// Secret Service and cannot start one (no program provides org.freedesktop.secrets): a
// server's or a container's bus, where the keyring will not appear by itself. A locked
// collection, a prompt, or a call that timed out is not that.
func NoSecretService(err error) bool {
	return errors.Is(err, ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, ErrNoSessionBus) && strings.Contains(err.Error(), "org.freedesktop.secrets")
}

// busError is a session bus that is named but does not answer: it matches ErrNoSessionBus.
type busError struct{ msg string }

func (e *busError) Error() string        { return e.msg }
func (e *busError) Is(target error) bool { return target == ErrNoSessionBus }

// busDialTarget returns what to dial for one D-Bus address entry of the unix: transport
// (unix:path=…, unix:abstract=…); ok is false for another transport or one it cannot read.
func busDialTarget(entry string) (network, target string, ok bool) {
	rest, isUnix := strings.CutPrefix(strings.TrimSpace(entry), "unix:")
	if !isUnix {
		return "", "", false
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(kv, "=")
		v, err := url.PathUnescape(v) // the %xx escaping of D-Bus address values
		if err != nil {
			return "", "", false
		}
		switch k {
		case "path":
			return "unix", v, true
		case "abstract":
			return "unix", "@" + v, true
		}
	}
	return "", "", false
}
