package sources

import (
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
)

// watchedCache is a DotenvCache of a live watcher, with a short read timeout.
func watchedCache(t *testing.T, timeout time.Duration) *DotenvCache {
	t.Helper()
	wt := startWatcher(t, 10*time.Millisecond)
	c := NewDotenvCache(DotenvCacheConfig{Watcher: wt, ReadTimeout: timeout, Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	return c
}

// getWithin runs c.Get(dir) and fails the test if it has not returned within 30s.
func getWithin(t *testing.T, c *DotenvCache, dir string) DotenvView {
	t.Helper()
	done := make(chan DotenvView, 1)
	go func() { done <- c.Get(dir) }()
	select {
	case v := <-done:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("Get(%s) still running after 30s", dir)
	}
	return DotenvView{}
}

func writeDotenv(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, DotenvName), []byte(content), 0o600); err != nil {
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
		return readBoundedFile(path, limit)
	}
	path := filepath.Join(dir, DotenvName)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			v := getWithin(t, c, dir)
			if !errors.Is(v.ReadErr, ErrReadTimeout) || !strings.Contains(v.ReadErr.Error(), "timed out reading "+path) {
				t.Errorf("Get while the read is stuck: %v; want ErrReadTimeout naming %s", v.ReadErr, path)
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
		data, fi, err := readBoundedFile(path, limit)
		if n.Add(1) == 1 {
			<-first // the first read has the old content and ends last
		}
		return data, fi, err
	}
	path := filepath.Join(dir, DotenvName)
	if v := getWithin(t, c, dir); !errors.Is(v.ReadErr, ErrReadTimeout) {
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

// Idle .env files are dropped by Sweep, on the cache's clock.
func TestIdleDotenvFilesAreSwept(t *testing.T) {
	dir := t.TempDir()
	writeDotenv(t, dir, "BL_API_KEY=k\n")
	clk := clock.NewFake(time.Unix(1_900_000_000, 0))
	wt := startWatcher(t, 10*time.Millisecond)
	c := NewDotenvCache(DotenvCacheConfig{Watcher: wt, Idle: time.Minute, Clock: clk, Log: zerolog.New(zerolog.NewTestWriter(t))})
	defer c.Close()
	c.Get(dir)
	c.Sweep()
	if c.Len() != 1 {
		t.Fatalf("%d cached after a sweep with nothing idle, want 1", c.Len())
	}
	clk.Add(61 * time.Second)
	c.Sweep()
	if c.Len() != 0 {
		t.Fatalf("%d cached after a minute idle, want 0", c.Len())
	}
}
