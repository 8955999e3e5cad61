package ipc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// SocketEnv names the variable that overrides the socket path for the daemon and every client.
const SocketEnv = "BLAUTH_SOCKET"

// SocketName is the socket's file name inside its directory.
const SocketName = "blauthd.sock"

// DefaultRuntimeDir returns the XDG runtime directory as github.com/adrg/xdg resolves it
// (XDG_RUNTIME_DIR, else /run/user/UID on Linux and other Unix systems, else the per-user
// temporary directory on macOS), so that the helper, which must stay on the standard library,
// agrees with the daemon. A test in cmd/blauthd keeps the two in step.
func DefaultRuntimeDir(getenv func(string) string) string {
	if d := xdgRuntimeDir(getenv); d != "" {
		return d
	}
	if runtime.GOOS == "darwin" {
		return ""
	}
	return filepath.Join("/run/user", strconv.Itoa(os.Getuid()))
}

// xdgRuntimeDir is XDG_RUNTIME_DIR as adrg/xdg reads it: a leading ~ is the home directory, and a
// value that is still not an absolute path does not count.
func xdgRuntimeDir(getenv func(string) string) string {
	d := getenv("XDG_RUNTIME_DIR")
	if d == "~" || strings.HasPrefix(d, "~/") {
		if home := getenv("HOME"); home != "" {
			d = filepath.Join(home, d[1:])
		}
	}
	if !filepath.IsAbs(d) {
		return ""
	}
	return d
}

// SocketPath returns where the socket lives: $BLAUTH_SOCKET; else blauth/blauthd.sock in
// runtimeDir when XDG_RUNTIME_DIR is set to an absolute path (a relative one is ignored, as the
// XDG specification says), or when runtimeDir exists and is private to this user;
// else a per-user directory in the temporary directory (blauth-UID), which the daemon creates
// with mode 0700 and refuses to use if anyone else owns it or can enter it.
func SocketPath(getenv func(string) string, runtimeDir string) string {
	if p := getenv(SocketEnv); p != "" {
		return p
	}
	if runtimeDir != "" {
		if xdgRuntimeDir(getenv) != "" || privateDir(runtimeDir) == nil {
			return filepath.Join(runtimeDir, "blauth", SocketName)
		}
	}
	tmp := getenv("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, "blauth-"+strconv.Itoa(os.Getuid()), SocketName)
}

// DefaultSocketPath is SocketPath with the process environment and DefaultRuntimeDir.
func DefaultSocketPath() string { return SocketPath(os.Getenv, DefaultRuntimeDir(os.Getenv)) }

// ErrUnsafeDir reports a socket directory that another user owns or that is open to others.
var ErrUnsafeDir = errors.New("unsafe socket directory")

// privateDir checks that dir is a directory owned by this user with no group or other bits.
func privateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrUnsafeDir, dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%w: %s is owned by uid %d, not %d", ErrUnsafeDir, dir, st.Uid, os.Getuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %#o; it must be 0700", ErrUnsafeDir, dir, fi.Mode().Perm())
	}
	return nil
}

// PrepareSocketDir makes sure dir exists with mode 0700 and belongs to this user. It creates a
// missing directory (and its missing parents, 0700) with that mode rather than changing it
// afterwards, and refuses an existing one owned by another user or open to group or others:
// blauth never loosens or takes over a directory it did not make.
func PrepareSocketDir(dir string) error {
	err := privateDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create socket directory: %w", err)
		}
		err = privateDir(dir)
	}
	return err
}
