package daemon

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/internal/blaxeltest"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/ipc"
)

// testDaemon is a daemon on a real socket in a temporary directory.
type testDaemon struct {
	*Daemon
	socket string
	home   string
	api    *blaxeltest.Server
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

type daemonOpts struct {
	env      []string
	blConfig string // contents of $HOME/.blaxel/config.yaml, if any
	clock    clock.Clock
	mutate   func(*Config)
}

func shortTempDir(t *testing.T) string {
	t.Helper()
	// Unix socket paths are limited to ~100 bytes: t.TempDir() can be too long.
	d, err := os.MkdirTemp("", "blauth")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func startDaemon(t *testing.T, api *blaxeltest.Server, o daemonOpts) *testDaemon {
	t.Helper()
	dir := shortTempDir(t)
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	blPath := filepath.Join(home, ".blaxel", "config.yaml")
	if o.blConfig != "" {
		if err := os.MkdirAll(filepath.Dir(blPath), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blPath, []byte(o.blConfig), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := o.env
	if api != nil {
		env = append([]string{"BL_API_URL=" + api.Base}, env...)
	}
	cfg := Config{
		SocketPath:   filepath.Join(dir, "run", "blauth", "blauthd.sock"),
		Log:          zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger(),
		Environ:      env,
		BLConfigPath: blPath,
		WriteBack:    true,
		Clock:        o.clock,
		Version:      "test",
	}
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("start daemon: %v", err)
	}
	td := &testDaemon{Daemon: d, socket: cfg.SocketPath, home: home, api: api, cancel: cancel, done: make(chan error, 1)}
	go func() { td.done <- d.Run(ctx) }()
	t.Cleanup(td.stop)
	return td
}

// stop cancels the daemon and waits for Run to return; it may be called more than once.
func (td *testDaemon) stop() {
	td.cancel()
	td.once.Do(func() {
		select {
		case td.err = <-td.done:
		case <-time.After(15 * time.Second):
			panic("daemon did not stop within 15s")
		}
	})
}

// do sends one request on a new connection.
func (td *testDaemon) do(t testing.TB, kv ...string) (*ipc.Message, error) {
	t.Helper()
	c, err := ipc.Dial(td.socket, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	return c.Do(ipc.NewMessage(append([]string{ipc.KeyVersion, ipc.Version}, kv...)...))
}

func (td *testDaemon) token(t testing.TB, kv ...string) *ipc.Token {
	t.Helper()
	resp, err := td.do(t, append([]string{ipc.KeyAction, ipc.ActionGet}, kv...)...)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	tok, err := ipc.ParseToken(resp)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	return tok
}

// sessionConfig is a bl config, in the current writer's format, holding one bl login session for
// workspace acme.
func sessionConfig(access, refresh string) string {
	return "context:\n  workspace: acme\nworkspaces:\n- name: acme\n  credentials:\n    access_token: " + access +
		"\n    refresh_token: " + refresh + "\n    expires_in: 7200\ntracking: false\n"
}
