// Package daemontest runs a real blauthd in the test's process, on a real Unix socket, for the
// tests of packages that drive the daemon from outside (the helper, the examples). The daemon
// package's own tests cannot import it (it imports daemon) and keep their own harness.
package daemontest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/ipc"
)

// ShortTempDir returns a temporary directory removed after the test. Unix socket paths are limited
// to about 104 bytes, which t.TempDir() can exceed.
func ShortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Start runs a daemon with cfg until the test ends. It logs to the test (cfg.Log is replaced);
// a zero Version is "test". It fails the test if the daemon cannot start or does not stop
// within 15 s.
func Start(t testing.TB, cfg daemon.Config) *daemon.Daemon {
	t.Helper()
	cfg.Log = zerolog.New(zerolog.NewTestWriter(t))
	if cfg.Version == "" {
		cfg.Version = "test"
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("start the daemon: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("the daemon did not stop within 15s")
		}
	})
	return d
}

// Get asks the daemon on socket, directly, what it serves for workspace ("" for the default).
func Get(t testing.TB, socket, workspace string) *ipc.Token {
	t.Helper()
	c, err := ipc.Dial(socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet)
	if workspace != "" {
		req.Add(ipc.KeyWorkspace, workspace)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("get %q from the daemon: %v", workspace, err)
	}
	tok, err := ipc.ParseToken(resp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
