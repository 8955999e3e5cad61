// Package testkit and the packages under it are blauth's test harnesses and fakes, in one place:
// nothing here is linked into a product binary (internal/arch enforces it). testkit itself holds
// the small helpers every test package shares; its sub-packages are a fake Blaxel API
// (blaxeltest), a real Ory Hydra (hydratest), an in-process daemon on a real socket (daemontest)
// and an in-memory keyring (memkeyring).
package testkit

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"
)

// ShortTempDir returns a temporary directory with a short path, removed after the test: a Unix
// socket path holds at most about 104 bytes, which t.TempDir() can exceed.
func ShortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// WaitFor polls cond until it holds, for at most timeout, and fails the test naming what it
// waited for when it never does. It is for events a test cannot be told of; it measures nothing.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(timeout, cond) {
		t.Fatalf("waited %s for %s", timeout, what)
	}
}

// Eventually polls cond until it holds or timeout passes, and reports whether it held. The
// polling interval grows from 1ms to 50ms.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
	}
}

// Within runs f and fails the test if it has not returned within timeout: for calls that must
// not block (hostile input). A call that does block is left behind.
func Within(t testing.TB, timeout time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s", what, timeout)
	}
}

// SyncBuffer is a bytes.Buffer that a process's output can be written to while a test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
