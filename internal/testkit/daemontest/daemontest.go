// Package daemontest runs a real blauthd in the test's process, on a real Unix socket in a
// temporary directory, with a temporary HOME: the one in-process daemon harness of every test
// that drives the daemon from outside (the daemon's own tests, the helper's, the examples').
package daemontest

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// Options say what the daemon holds. The zero value is a daemon with no credential at all.
type Options struct {
	// Env is the daemon's own environment (its BL_* variables).
	Env []string
	// BLConfig is the content of $HOME/.blaxel/config.yaml, written before the start ("" none).
	BLConfig string
	// API, when set, is the fake Blaxel API the daemon talks to (BL_API_URL in its environment).
	API *blaxeltest.Server
	// Keyring, when set, is the daemon's keyring.
	Keyring sources.KeyringStore
	// Clock, when set, is the daemon's wall clock.
	Clock clock.Clock
	// Socket, when set, is where the daemon listens (else a new temporary directory's socket).
	Socket string
	// Mutate, when set, changes the configuration last.
	Mutate func(*daemon.Config)
}

// Daemon is a running daemon. Its fields are for the test to read.
type Daemon struct {
	*daemon.Daemon
	Socket string // its socket
	Home   string // its HOME, holding .blaxel/config.yaml
	API    *blaxeltest.Server

	cancel context.CancelFunc
	done   chan error // receives what Run returned

	mu      sync.Mutex
	stopped bool  // Run has returned
	err     error // what it returned
}

// Start runs a daemon until the test ends. It logs to the test; a zero Version is "test". It
// fails the test if the daemon cannot start, and at the end if it does not stop within 30s.
func Start(t testing.TB, o Options) *Daemon {
	t.Helper()
	dir := testkit.ShortTempDir(t, "bd")
	home := filepath.Join(dir, "home")
	blPath := filepath.Join(home, ".blaxel", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(blPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if o.BLConfig != "" {
		if err := os.WriteFile(blPath, []byte(o.BLConfig), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := o.Env
	if o.API != nil {
		env = append([]string{"BL_API_URL=" + o.API.Base}, env...)
	}
	socket := o.Socket
	if socket == "" {
		socket = filepath.Join(dir, "run", "blauth", "blauthd.sock")
	}
	cfg := daemon.Config{
		SocketPath: socket, Log: zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger(),
		Environ: env, BLConfigPath: blPath, WriteBack: true, Keyring: o.Keyring, Clock: o.Clock, Version: "test",
	}
	if o.Mutate != nil {
		o.Mutate(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("start the daemon: %v", err)
	}
	td := &Daemon{Daemon: d, Socket: cfg.SocketPath, Home: home, API: o.API, cancel: cancel, done: make(chan error, 1)}
	go func() { td.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		if err := td.Stop(); err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	return td
}

// Stop stops the daemon and returns what Run returned; it may be called more than once.
func (td *Daemon) Stop() error {
	td.cancel()
	stopped, err := td.wait(30 * time.Second)
	if !stopped {
		panic("daemontest: the daemon did not stop within 30s")
	}
	return err
}

// Stopped waits up to timeout for the daemon to stop by itself (action=stop) and reports
// whether it did. It may be called again, and before Stop.
func (td *Daemon) Stopped(timeout time.Duration) bool {
	stopped, _ := td.wait(timeout)
	return stopped
}

// wait waits up to timeout for Run to return, unless it already has, and reports whether it
// has and what it returned.
func (td *Daemon) wait(timeout time.Duration) (bool, error) {
	td.mu.Lock()
	defer td.mu.Unlock()
	if !td.stopped {
		select {
		case td.err = <-td.done:
			td.stopped = true
		case <-time.After(timeout):
		}
	}
	return td.stopped, td.err
}

// Do sends one request (version=ipc.Version and kv) on a new connection, and waits at most 60s
// for the answer: a bound for a broken daemon, far past what a loaded machine takes.
func (td *Daemon) Do(t testing.TB, kv ...string) (*ipc.Message, error) {
	t.Helper()
	c, err := ipc.Dial(td.Socket, 60*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	return c.Do(ipc.NewMessage(append([]string{ipc.KeyVersion, ipc.Version}, kv...)...))
}

// Token gets a token (action=get and kv), failing the test if there is none.
func (td *Daemon) Token(t testing.TB, kv ...string) *ipc.Token {
	t.Helper()
	resp, err := td.Do(t, append([]string{ipc.KeyAction, ipc.ActionGet}, kv...)...)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	tok, err := ipc.ParseToken(resp)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	return tok
}

// Get asks the daemon on socket, directly, what it serves for workspace ("" for the default).
func Get(t testing.TB, socket, workspace string) *ipc.Token {
	t.Helper()
	td := &Daemon{Socket: socket}
	if workspace == "" {
		return td.Token(t)
	}
	return td.Token(t, ipc.KeyWorkspace, workspace)
}

// Watcher is one watch connection.
type Watcher struct {
	C net.Conn
	r *bufio.Reader
}

// Watch opens a watch (action=watch and kv), closed when the test ends.
func (td *Daemon) Watch(t testing.TB, kv ...string) *Watcher {
	t.Helper()
	c, err := net.Dial("unix", td.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := ipc.NewMessage(append([]string{ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionWatch}, kv...)...)
	if err := ipc.WriteMessage(c, req); err != nil {
		t.Fatal(err)
	}
	return &Watcher{C: c, r: bufio.NewReader(c)}
}

// Next reads the watcher's next message, waiting at most 30s.
func (w *Watcher) Next(t testing.TB) *ipc.Message {
	t.Helper()
	_ = w.C.SetReadDeadline(time.Now().Add(30 * time.Second))
	m, err := ipc.ReadAnswer(w.r)
	if err != nil {
		t.Fatalf("watch: no message: %v", err)
	}
	return m
}

// Read reads the watcher's next message, or the error that ended the stream.
func (w *Watcher) Read(timeout time.Duration) (*ipc.Message, error) {
	_ = w.C.SetReadDeadline(time.Now().Add(timeout))
	return ipc.ReadAnswer(w.r)
}

// Quiet checks that no message comes within d.
func (w *Watcher) Quiet(t testing.TB, d time.Duration) {
	t.Helper()
	if m, err := w.Read(d); err == nil {
		t.Fatalf("watch: unexpected message %v", m.Fields)
	}
}
