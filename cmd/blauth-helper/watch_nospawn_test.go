package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// lockedBuffer is a stderr that a test reads while the helper writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A watch never starts a daemon, even with spawning allowed: with none, it says once that it
// waits; it follows the daemon that comes; after that daemon stops it waits again, and takes
// the next one's token.
func TestWatchNeverStartsADaemon(t *testing.T) {
	dir := shortTempDir(t)
	socket := filepath.Join(dir, "blauthd.sock")
	t.Setenv(ipc.SocketEnv, socket)
	t.Setenv("BLAUTH_NO_SPAWN", "") // spawning allowed: only watch itself may refuse it

	var mu sync.Mutex
	starts := 0
	outR, outW := io.Pipe()
	var stderr lockedBuffer
	sys := testSystem(context.Background(), strings.NewReader(""), outW, &stderr)
	sys.startDaemon = func(string) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		starts++
		return 0, os.ErrPermission
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"watch"}, sys)
		outW.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("watch did not end with its context")
		}
	})
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(want string) {
		t.Helper()
		select {
		case l := <-lines:
			if l != want {
				t.Fatalf("watch printed %q, want %q", l, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("watch printed no token; stderr %q", stderr.String())
		}
	}
	waiting := func(n int) {
		t.Helper()
		testkit.WaitFor(t, 30*time.Second, "watch to say it waits", func() bool {
			mu.Lock()
			defer mu.Unlock()
			if starts != 0 {
				t.Fatalf("watch tried to start a daemon; stderr %q", stderr.String())
			}
			return strings.Count(stderr.String(), "waiting for a daemon") == n
		})
	}

	waiting(1)
	td := daemontest.Start(t, daemontest.Options{Socket: socket, Env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=key-1"}})
	next("key-1")
	if err := td.Stop(); err != nil {
		t.Fatal(err)
	}
	waiting(2)
	daemontest.Start(t, daemontest.Options{Socket: socket, Env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=key-2"}})
	next("key-2")

	mu.Lock()
	defer mu.Unlock()
	if starts != 0 {
		t.Errorf("watch tried to start a daemon %d times", starts)
	}
	for _, want := range []string{
		"blauth: no blauthd answers on " + socket + "; waiting for a daemon (watch never starts one",
		"blauth: blauthd stopped; waiting for a daemon",
		"blauth: blauthd answers again on " + socket,
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
}
