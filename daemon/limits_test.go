package daemon_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// scopedDaemon runs a daemon holding an API key for workspace a, with one socket scoped to a
// (its caps the defaults unless mutate sets them).
func scopedDaemon(t *testing.T, mutate func(*daemon.Config)) (*daemontest.Daemon, *daemontest.Daemon) {
	t.Helper()
	scoped := filepath.Join(testkit.ShortTempDir(t, "bd"), "fwd", "scoped.sock")
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=key-a"}, Mutate: func(c *daemon.Config) {
		c.ScopedSockets = []daemon.ScopedSocket{{Path: scoped, Workspaces: []string{"a"}}}
		if mutate != nil {
			mutate(c)
		}
	}})
	return td, &daemontest.Daemon{Socket: scoped}
}

// firstToken reads a watcher's first message and fails unless it is a token.
func firstToken(t *testing.T, w *daemontest.Watcher) {
	t.Helper()
	if _, err := ipc.ParseToken(w.Next(t)); err != nil {
		t.Fatalf("watch: %v", err)
	}
}

// The scoped socket's default caps (32 watchers, 64 connections) are its own: past them it
// answers busy, while the daemon's own socket goes on serving gets and watches.
func TestScopedSocketAnswersBusyPastItsOwnCaps(t *testing.T) {
	td, scoped := scopedDaemon(t, nil)
	var watchers []*daemontest.Watcher
	for range 32 {
		w := scoped.Watch(t)
		firstToken(t, w)
		watchers = append(watchers, w)
	}
	if m, err := scoped.Watch(t).Read(10 * time.Second); err != nil || ipc.ErrorCode(ipc.AsError(m)) != ipc.CodeBusy {
		t.Fatalf("a 33rd watcher on the scoped socket: %v %v, want code busy", m, err)
	}
	// The main socket is not affected.
	firstToken(t, td.Watch(t))
	if tok := td.Token(t); tok.Token != "key-a" {
		t.Fatalf("get on the main socket: %v", tok)
	}
	// Connections: 32 watchers and 32 idle connections fill the scoped socket; one more is busy.
	for range 32 {
		c, err := ipc.Dial(scoped.Socket, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	testkit.WaitFor(t, 10*time.Second, "the 65th connection refused with busy", func() bool {
		_, err := scoped.Do(t, ipc.KeyAction, ipc.ActionGet)
		return ipc.ErrorCode(err) == ipc.CodeBusy
	})
	if tok := td.Token(t); tok.Token != "key-a" {
		t.Fatalf("get on the main socket with the scoped one full: %v", tok)
	}
	// A watcher that leaves makes room for another.
	watchers[0].C.Close()
	testkit.WaitFor(t, 10*time.Second, "a new watcher once one left", func() bool {
		m, err := scoped.Watch(t).Read(10 * time.Second)
		if err != nil {
			return false
		}
		_, err = ipc.ParseToken(m)
		return err == nil
	})
}

// The daemon's own socket has a watcher cap of its own, set by MaxWatchers.
func TestMainSocketWatcherCap(t *testing.T) {
	td, scoped := scopedDaemon(t, func(c *daemon.Config) { c.MaxWatchers = 3 })
	for range 3 {
		firstToken(t, td.Watch(t))
	}
	if m, err := td.Watch(t).Read(10 * time.Second); err != nil || ipc.ErrorCode(ipc.AsError(m)) != ipc.CodeBusy || !strings.Contains(m.Value(ipc.KeyMessage), "3 watchers") {
		t.Fatalf("a 4th watcher with a cap of 3: %v %v, want code busy", m, err)
	}
	if tok := td.Token(t); tok.Token != "key-a" {
		t.Fatalf("a get with the watchers full: %v", tok)
	}
	firstToken(t, scoped.Watch(t)) // the scoped socket's watchers are counted apart
}

// A request on a scoped socket is small (the scope keeps only its workspace and min_ttl): a
// larger one is refused after a bounded read.
func TestScopedSocketRefusesALargeRequest(t *testing.T) {
	td, scoped := scopedDaemon(t, nil)
	pad := strings.Repeat("x", 8<<10)
	_, err := scoped.Do(t, ipc.KeyAction, ipc.ActionGet, "pad1", pad, "pad2", pad, "pad3", pad)
	if ipc.ErrorCode(err) != ipc.CodeBadRequest || !strings.Contains(err.Error(), "16384 bytes") {
		t.Fatalf("a 24 KiB request on the scoped socket: %v, want bad_request", err)
	}
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionGet, "pad1", pad, "pad2", pad, "pad3", pad); err != nil {
		t.Fatalf("the same request on the main socket: %v", err)
	}
}

// A daemon serves at most MaxScopedSockets scoped sockets: the memory its caps allow is counted
// for that many.
func TestTooManyScopedSocketsAreRefused(t *testing.T) {
	dir := testkit.ShortTempDir(t, "bd")
	cfg := daemon.Config{SocketPath: filepath.Join(dir, "main.sock")}
	for i := range daemon.MaxScopedSockets + 1 {
		cfg.ScopedSockets = append(cfg.ScopedSockets, daemon.ScopedSocket{Path: filepath.Join(dir, fmt.Sprintf("s%d.sock", i)), Workspaces: []string{"a"}})
	}
	if err := cfg.Validate(); !errors.Is(err, daemon.ErrInvalidConfig) || !strings.Contains(err.Error(), "at most 16") {
		t.Fatalf("17 scoped sockets: %v, want an invalid setting", err)
	}
	cfg.ScopedSockets = cfg.ScopedSockets[:daemon.MaxScopedSockets]
	if err := cfg.Validate(); err != nil {
		t.Fatalf("16 scoped sockets: %v", err)
	}
}
