package dotenv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/watch"
)

// watchedCache is a DotenvCache of a live watcher, with a short read timeout.
func watchedCache(t *testing.T, timeout time.Duration) *Cache {
	t.Helper()
	wt := startWatcher(t, 10*time.Millisecond)
	c := NewCache(CacheConfig{Watcher: wt, ReadTimeout: timeout, Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	return c
}

// getWithin runs c.Get(dir) and fails the test if it has not returned within 30s.
func getWithin(t *testing.T, c *Cache, dir string) View {
	t.Helper()
	done := make(chan View, 1)
	go func() { done <- c.Get(dir) }()
	select {
	case v := <-done:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("Get(%s) still running after 30s", dir)
	}
	return View{}
}

func writeDotenv(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, Name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A read that does not finish (a stalled file system) fails the requests waiting for it after
// ReadTimeout, one read serves every concurrent request for the same file, and its outcome is
// installed when it finally ends.
func TestDotenvReadIsBoundedAndShared(t *testing.T) {
	dir := t.TempDir()
	writeDotenv(t, dir, "BL_WORKSPACE=acme\nBL_API_KEY=slow\n")
	c := watchedCache(t, 100*time.Millisecond)
	release := make(chan struct{})
	var calls atomic.Int32
	c.readFile = func(path string, limit int64) ([]byte, os.FileInfo, error) {
		calls.Add(1)
		<-release
		return sources.ReadBounded(path, limit)
	}
	path := filepath.Join(dir, Name)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			v := getWithin(t, c, dir)
			if !errors.Is(v.ReadErr, sources.ErrReadTimeout) || !strings.Contains(v.ReadErr.Error(), "timed out reading "+path) {
				t.Errorf("Get while the read is stuck: %v; want sources.ErrReadTimeout naming %s", v.ReadErr, path)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("%d reads for 10 concurrent first requests, want 1", n)
	}
	close(release)
	testkit.WaitFor(t, 30*time.Second, "the late read to be installed", func() bool {
		v := getWithin(t, c, dir)
		return v.ReadErr == nil && v.Vars["BL_API_KEY"] == "slow"
	})
	if n := calls.Load(); n != 1 {
		t.Errorf("%d reads, want the one late read to have been installed", n)
	}
}

// A slow read of the old content that ends after a read of the new content (started by the
// watcher) is not installed.
func TestStaleDotenvReadDoesNotOverwriteANewerOne(t *testing.T) {
	dir := t.TempDir()
	writeDotenv(t, dir, "BL_WORKSPACE=acme\nBL_API_KEY=old\n")
	c := watchedCache(t, 50*time.Millisecond)
	first := make(chan struct{})
	var n atomic.Int32
	c.readFile = func(path string, limit int64) ([]byte, os.FileInfo, error) {
		data, fi, err := sources.ReadBounded(path, limit)
		if n.Add(1) == 1 {
			<-first // the first read has the old content and ends last
		}
		return data, fi, err
	}
	path := filepath.Join(dir, Name)
	if v := getWithin(t, c, dir); !errors.Is(v.ReadErr, sources.ErrReadTimeout) {
		t.Fatalf("first request: %v; want a timeout", v.ReadErr)
	}
	c.mu.RLock()
	stale := c.reads[path]
	c.mu.RUnlock()

	writeDotenv(t, dir, "BL_WORKSPACE=acme\nBL_API_KEY=new\n")
	testkit.WaitFor(t, 30*time.Second, "the edit to be served", func() bool {
		v := getWithin(t, c, dir)
		return v.ReadErr == nil && v.Vars["BL_API_KEY"] == "new"
	})
	close(first)
	select {
	case <-stale.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the stale read did not end")
	}
	if v := getWithin(t, c, dir); v.ReadErr != nil || v.Vars["BL_API_KEY"] != "new" {
		t.Fatalf("after the stale read ended: %+v; want the newer content", v)
	}
}

// Idle .env files are dropped by Sweep, on the cache's clock. A view is Cached only from a
// watched entry already read, and the generation moves when an entry is read or dropped: while
// it stays, a Cached view is what Get returns.
func TestIdleDotenvFilesAreSwept(t *testing.T) {
	dir := t.TempDir()
	writeDotenv(t, dir, "BL_API_KEY=k\n")
	clk := clock.NewFake(time.Unix(1_900_000_000, 0))
	wt := startWatcher(t, 10*time.Millisecond)
	c := NewCache(CacheConfig{Watcher: wt, Idle: time.Minute, Clock: clk, Log: zerolog.New(zerolog.NewTestWriter(t))})
	defer c.Close()
	if v := c.Get(dir); v.Cached {
		t.Error("the first read of a .env says Cached")
	}
	gen := c.Generation()
	if v := c.Get(dir); !v.Cached || v.Vars["BL_API_KEY"] != "k" {
		t.Errorf("the second Get: Cached %v, vars %v", v.Cached, v.Vars)
	}
	c.Sweep()
	if c.Len() != 1 || c.Generation() != gen {
		t.Fatalf("%d cached after a sweep with nothing idle (want 1), generation %d -> %d", c.Len(), gen, c.Generation())
	}
	clk.Add(61 * time.Second)
	c.Sweep()
	if c.Len() != 0 {
		t.Fatalf("%d cached after a minute idle, want 0", c.Len())
	}
	if c.Generation() == gen {
		t.Error("dropping an idle .env left the generation as it was")
	}
	if v := NewCache(CacheConfig{}).Get(dir); v.Cached {
		t.Error("a cache without a watcher says Cached")
	}
}

// startWatcher runs a watcher until the test ends.
func startWatcher(t *testing.T, debounce time.Duration) *watch.Watcher {
	t.Helper()
	w, err := watch.New(zerolog.New(zerolog.NewTestWriter(t)), debounce)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}
