package sources

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// watchTestDebounce keeps the tests quick; the default is exercised by the benchmark.
const (
	watchTestDebounce = 20 * time.Millisecond
	watchTestTimeout  = 30 * time.Second
)

// startWatcher returns a running watcher that stops, and is checked to have stopped cleanly,
// when the test ends.
func startWatcher(t *testing.T, debounce time.Duration) *Watcher {
	t.Helper()
	w := newStoppedWatcher(t, debounce)
	runWatcher(t, w)
	return w
}

func newStoppedWatcher(t *testing.T, debounce time.Duration) *Watcher {
	t.Helper()
	w, err := NewWatcher(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel), debounce)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func runWatcher(t *testing.T, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(watchTestTimeout):
			t.Errorf("Run did not return after its context was canceled")
		}
	})
}

// changeRecorder records what the watched file looked like at each onChange call.
type changeRecorder struct {
	path   string
	calls  atomic.Int64
	states chan string
}

func watchFile(t *testing.T, w *Watcher, path string) (*changeRecorder, func()) {
	t.Helper()
	rec := &changeRecorder{path: path, states: make(chan string, 1000)}
	cancel, err := w.Watch(path, rec.onChange)
	if err != nil {
		t.Fatalf("Watch(%s): %v", path, err)
	}
	t.Cleanup(cancel)
	return rec, cancel
}

func (rec *changeRecorder) onChange() {
	rec.calls.Add(1)
	select {
	case rec.states <- fileState(rec.path):
	default: // the tests only look for one state; never block the watcher
	}
}

// fileState is the permission bits and the content of the file at path, following symlinks.
func fileState(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "unreadable"
	}
	return fmt.Sprintf("%v %s", fi.Mode().Perm(), b)
}

// waitFor waits for a call that saw the file in state want.
func (rec *changeRecorder) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(watchTestTimeout)
	var seen []string
	for {
		select {
		case got := <-rec.states:
			if got == want {
				return
			}
			seen = append(seen, got)
		case <-deadline:
			t.Fatalf("no onChange for %s saw %q within %v; calls saw %q", rec.path, want, watchTestTimeout, seen)
		}
	}
}

// watchBarrier returns once every onChange call due to events for dir that happened before it
// was called has been made. It writes a sentinel file in dir twice and waits for each write to
// be reported: calls are made in due order on Run's goroutine, so once the second write is
// reported, the batch holding the first report (and anything due before it) is complete.
func watchBarrier(t *testing.T, w *Watcher, dir string) {
	t.Helper()
	path := filepath.Join(dir, ".barrier")
	rec, cancel := watchFile(t, w, path)
	defer cancel()
	for i := range 2 {
		writeInPlace(t, path, strconv.Itoa(i))
		rec.waitFor(t, "-rw------- "+strconv.Itoa(i))
	}
}

func writeInPlace(t *testing.T, path, content string) {
	t.Helper()
	// O_TRUNC then write, as bl rewrites its config.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// renameSave writes content to a temporary file next to path and renames it over path, as
// VS Code, JetBrains IDEs and blauth itself save files.
func renameSave(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-1234")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// watchTempDir is t.TempDir() with symlinks resolved, to compare with the directories watched.
func watchTempDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWatchEdits(t *testing.T) {
	type step struct {
		edit func(t *testing.T, dir string)
		want string // the state onChange must see after the edit
	}
	// Unless a case has its own setup, dir/config.yaml holds "v1" (mode 0600) and is watched.
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) (watched string)
		steps []step
		dirs  int // WatchedDirs after the last step, if not 0
	}{
		{
			name: "write in place",
			steps: []step{{func(t *testing.T, dir string) {
				writeInPlace(t, filepath.Join(dir, "config.yaml"), "v2")
			}, "-rw------- v2"}},
		},
		{
			name: "append",
			steps: []step{{func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, "config.yaml"), os.O_WRONLY|os.O_APPEND, 0)
				must(t, err)
				_, err = f.WriteString("+v2")
				must(t, err)
				must(t, f.Close())
			}, "-rw------- v1+v2"}},
		},
		{
			name: "atomic rename-save",
			steps: []step{{func(t *testing.T, dir string) {
				renameSave(t, filepath.Join(dir, "config.yaml"), "v2")
			}, "-rw------- v2"}},
		},
		{
			name: "vim-style backup, write, delete backup",
			steps: []step{{func(t *testing.T, dir string) {
				path := filepath.Join(dir, "config.yaml")
				must(t, os.Rename(path, path+"~"))
				must(t, os.WriteFile(path, []byte("v2"), 0o600))
				must(t, os.Remove(path+"~"))
			}, "-rw------- v2"}},
		},
		{
			name: "delete then recreate",
			steps: []step{{func(t *testing.T, dir string) {
				path := filepath.Join(dir, "config.yaml")
				must(t, os.Remove(path))
				must(t, os.WriteFile(path, []byte("v2"), 0o600))
			}, "-rw------- v2"}},
		},
		{
			name: "delete, then recreate later",
			steps: []step{
				{func(t *testing.T, dir string) { must(t, os.Remove(filepath.Join(dir, "config.yaml"))) }, "missing"},
				{func(t *testing.T, dir string) { writeInPlace(t, filepath.Join(dir, "config.yaml"), "v2") }, "-rw------- v2"},
			},
		},
		{
			name: "chmod",
			steps: []step{{func(t *testing.T, dir string) {
				must(t, os.Chmod(filepath.Join(dir, "config.yaml"), 0o644))
			}, "-rw-r--r-- v1"}},
		},
		{
			name: "symlinked file whose target is edited",
			setup: func(t *testing.T, dir string) string {
				must(t, os.MkdirAll(filepath.Join(dir, "real"), 0o700))
				must(t, os.MkdirAll(filepath.Join(dir, "link"), 0o700))
				must(t, os.WriteFile(filepath.Join(dir, "real", "target"), []byte("v1"), 0o600))
				must(t, os.Symlink("../real/target", filepath.Join(dir, "link", "config.yaml")))
				return filepath.Join(dir, "link", "config.yaml")
			},
			steps: []step{
				{func(t *testing.T, dir string) { writeInPlace(t, filepath.Join(dir, "real", "target"), "v2") }, "-rw------- v2"},
				{func(t *testing.T, dir string) { renameSave(t, filepath.Join(dir, "real", "target"), "v3") }, "-rw------- v3"},
			},
			dirs: 2,
		},
		{
			name: "symlink re-pointed to another file",
			setup: func(t *testing.T, dir string) string {
				must(t, os.WriteFile(filepath.Join(dir, "a"), []byte("A"), 0o600))
				must(t, os.MkdirAll(filepath.Join(dir, "other"), 0o700))
				must(t, os.WriteFile(filepath.Join(dir, "other", "b"), []byte("B"), 0o600))
				must(t, os.Symlink("a", filepath.Join(dir, "config.yaml")))
				return filepath.Join(dir, "config.yaml")
			},
			steps: []step{
				{func(t *testing.T, dir string) {
					// As ln -sfn does it: a new link renamed over the old one.
					must(t, os.Symlink(filepath.Join(dir, "other", "b"), filepath.Join(dir, "config.yaml.new")))
					must(t, os.Rename(filepath.Join(dir, "config.yaml.new"), filepath.Join(dir, "config.yaml")))
				}, "-rw------- B"},
				// The new target is watched now.
				{func(t *testing.T, dir string) { writeInPlace(t, filepath.Join(dir, "other", "b"), "B2") }, "-rw------- B2"},
			},
			dirs: 2,
		},
		{
			name: "symlinked directory re-pointed",
			setup: func(t *testing.T, dir string) string {
				for _, d := range []string{"one", "two"} {
					must(t, os.MkdirAll(filepath.Join(dir, d), 0o700))
					must(t, os.WriteFile(filepath.Join(dir, d, "config.yaml"), []byte(d), 0o600))
				}
				must(t, os.Symlink("one", filepath.Join(dir, "current")))
				return filepath.Join(dir, "current", "config.yaml")
			},
			steps: []step{
				{func(t *testing.T, dir string) { writeInPlace(t, filepath.Join(dir, "one", "config.yaml"), "one-2") }, "-rw------- one-2"},
				{func(t *testing.T, dir string) {
					must(t, os.Remove(filepath.Join(dir, "current")))
					must(t, os.Symlink("two", filepath.Join(dir, "current")))
				}, "-rw------- two"},
				{func(t *testing.T, dir string) { writeInPlace(t, filepath.Join(dir, "two", "config.yaml"), "two-2") }, "-rw------- two-2"},
			},
			dirs: 2,
		},
		{
			name: "file in a directory that does not exist yet",
			setup: func(t *testing.T, dir string) string {
				return filepath.Join(dir, "a", "b", "config.yaml")
			},
			steps: []step{
				{func(t *testing.T, dir string) {
					must(t, os.MkdirAll(filepath.Join(dir, "a", "b"), 0o700))
					writeInPlace(t, filepath.Join(dir, "a", "b", "config.yaml"), "v1")
				}, "-rw------- v1"},
				{func(t *testing.T, dir string) { writeInPlace(t, filepath.Join(dir, "a", "b", "config.yaml"), "v2") }, "-rw------- v2"},
			},
			dirs: 1,
		},
		{
			name: "directory deleted and recreated",
			setup: func(t *testing.T, dir string) string {
				must(t, os.MkdirAll(filepath.Join(dir, "d"), 0o700))
				must(t, os.WriteFile(filepath.Join(dir, "d", "config.yaml"), []byte("v1"), 0o600))
				return filepath.Join(dir, "d", "config.yaml")
			},
			steps: []step{
				{func(t *testing.T, dir string) {
					must(t, os.RemoveAll(filepath.Join(dir, "d")))
					must(t, os.Mkdir(filepath.Join(dir, "d"), 0o700))
					writeInPlace(t, filepath.Join(dir, "d", "config.yaml"), "v2")
				}, "-rw------- v2"},
				// The recreated directory is watched, not the deleted one.
				{func(t *testing.T, dir string) { writeInPlace(t, filepath.Join(dir, "d", "config.yaml"), "v3") }, "-rw------- v3"},
				{func(t *testing.T, dir string) { must(t, os.RemoveAll(filepath.Join(dir, "d"))) }, "missing"},
				{func(t *testing.T, dir string) {
					must(t, os.Mkdir(filepath.Join(dir, "d"), 0o700))
					writeInPlace(t, filepath.Join(dir, "d", "config.yaml"), "v4")
				}, "-rw------- v4"},
			},
			dirs: 1,
		},
		{
			name: "directory renamed away and recreated",
			setup: func(t *testing.T, dir string) string {
				must(t, os.MkdirAll(filepath.Join(dir, "d"), 0o700))
				must(t, os.WriteFile(filepath.Join(dir, "d", "config.yaml"), []byte("v1"), 0o600))
				return filepath.Join(dir, "d", "config.yaml")
			},
			steps: []step{
				{func(t *testing.T, dir string) { must(t, os.Rename(filepath.Join(dir, "d"), filepath.Join(dir, "old"))) }, "missing"},
				// The moved directory is no longer the one watched.
				{func(t *testing.T, dir string) {
					writeInPlace(t, filepath.Join(dir, "old", "config.yaml"), "moved")
					must(t, os.Mkdir(filepath.Join(dir, "d"), 0o700))
					writeInPlace(t, filepath.Join(dir, "d", "config.yaml"), "v2")
				}, "-rw------- v2"},
			},
			dirs: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := watchTempDir(t)
			w := startWatcher(t, watchTestDebounce)
			path := filepath.Join(dir, "config.yaml")
			if tt.setup != nil {
				path = tt.setup(t, dir)
			} else {
				must(t, os.WriteFile(path, []byte("v1"), 0o600))
			}
			rec, _ := watchFile(t, w, path)
			for _, s := range tt.steps {
				s.edit(t, dir)
				rec.waitFor(t, s.want)
			}
			want := tt.dirs
			if want == 0 {
				want = 1
			}
			if got := w.WatchedDirs(); got != want {
				t.Errorf("WatchedDirs() = %d, want %d (%v)", got, want, w.fsw.WatchList())
			}
		})
	}
}

func TestWatchMissingDirectoryWatchesNearestAncestor(t *testing.T) {
	dir := watchTempDir(t)
	w := startWatcher(t, watchTestDebounce)
	rec, _ := watchFile(t, w, filepath.Join(dir, "a", "b", "c", "config.yaml"))
	if got := w.fsw.WatchList(); !slices.Equal(got, []string{dir}) {
		t.Fatalf("watching %v, want only the nearest existing ancestor %s", got, dir)
	}
	must(t, os.MkdirAll(filepath.Join(dir, "a", "b", "c"), 0o700))
	renameSave(t, filepath.Join(dir, "a", "b", "c", "config.yaml"), "v1")
	rec.waitFor(t, "-rw------- v1")
	if got, want := w.fsw.WatchList(), []string{filepath.Join(dir, "a", "b", "c")}; !slices.Equal(got, want) {
		t.Errorf("watching %v, want %v", got, want)
	}
}

func TestWatchCancel(t *testing.T) {
	dir := watchTempDir(t)
	w := startWatcher(t, watchTestDebounce)
	path := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(path, []byte("v1"), 0o600))
	rec, cancel := watchFile(t, w, path)
	if got := w.WatchedDirs(); got != 1 {
		t.Fatalf("WatchedDirs() = %d after Watch, want 1", got)
	}
	writeInPlace(t, path, "v2")
	rec.waitFor(t, "-rw------- v2")

	cancel()
	cancel() // a second call is a no-op
	if got := w.WatchedDirs(); got != 0 {
		t.Errorf("WatchedDirs() = %d after cancel, want 0", got)
	}
	if got := w.fsw.WatchList(); len(got) != 0 {
		t.Errorf("fsnotify still watches %v after cancel", got)
	}

	// No call after cancel: watch the directory again through another file, edit both, and
	// wait until the other file's change has been reported.
	before := rec.calls.Load()
	writeInPlace(t, path, "v3")
	watchBarrier(t, w, dir)
	if got := rec.calls.Load(); got != before {
		t.Errorf("onChange called %d times after cancel", got-before)
	}
}

func TestWatchCancelDuringPendingCall(t *testing.T) {
	dir := watchTempDir(t)
	// A debounce long enough that the call is still pending when cancel runs.
	w := startWatcher(t, 500*time.Millisecond)
	path, other := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "other")
	must(t, os.WriteFile(path, []byte("v1"), 0o600))
	rec, cancel := watchFile(t, w, path)
	recOther, _ := watchFile(t, w, other)
	writeInPlace(t, path, "v2")
	deadline := time.Now().Add(watchTestTimeout)
	for !w.hasPending() {
		if time.Now().After(deadline) {
			t.Fatal("the write was not seen")
		}
		time.Sleep(time.Millisecond)
	}
	if rec.calls.Load() != 0 {
		t.Fatal("onChange called before the debounce ended")
	}
	cancel()
	// other's call is due after the canceled one would have been, and calls are made in due
	// order: once it has come, the canceled one would have too.
	writeInPlace(t, other, "x")
	recOther.waitFor(t, "-rw------- x")
	if got := rec.calls.Load(); got != 0 {
		t.Errorf("onChange called %d times after cancel", got)
	}
}

func (w *Watcher) hasPending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) > 0
}

func TestWatchCancelFromOnChange(t *testing.T) {
	dir := watchTempDir(t)
	w := startWatcher(t, watchTestDebounce)
	path := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(path, []byte("v1"), 0o600))
	var cancel func()
	called := make(chan struct{}, 10)
	ready := make(chan struct{})
	cancel, err := w.Watch(path, func() {
		<-ready
		cancel()
		called <- struct{}{}
	})
	must(t, err)
	close(ready)
	writeInPlace(t, path, "v2")
	select {
	case <-called:
	case <-time.After(watchTestTimeout):
		t.Fatal("onChange not called")
	}
	if got := w.WatchedDirs(); got != 0 {
		t.Errorf("WatchedDirs() = %d after cancel from onChange, want 0", got)
	}
}

func TestWatchSharedDirectory(t *testing.T) {
	dir := watchTempDir(t)
	w := startWatcher(t, watchTestDebounce)
	a, b := filepath.Join(dir, "a.env"), filepath.Join(dir, "b.env")
	must(t, os.WriteFile(a, []byte("a1"), 0o600))
	must(t, os.WriteFile(b, []byte("b1"), 0o600))
	recA, cancelA := watchFile(t, w, a)
	recB, cancelB := watchFile(t, w, b)
	if got := w.WatchedDirs(); got != 1 {
		t.Fatalf("WatchedDirs() = %d for two files in one directory, want 1", got)
	}
	writeInPlace(t, a, "a2")
	recA.waitFor(t, "-rw------- a2")
	renameSave(t, b, "b2")
	recB.waitFor(t, "-rw------- b2")
	if n := recB.calls.Load(); n != 1 {
		t.Errorf("b's onChange called %d times, want 1 (only for its own edit)", n)
	}

	cancelA()
	if got := w.WatchedDirs(); got != 1 {
		t.Errorf("WatchedDirs() = %d with b still watched, want 1", got)
	}
	writeInPlace(t, b, "b3")
	recB.waitFor(t, "-rw------- b3")
	cancelB()
	if got := w.WatchedDirs(); got != 0 {
		t.Errorf("WatchedDirs() = %d after both cancels, want 0", got)
	}
}

func TestWatchSamePathTwice(t *testing.T) {
	dir := watchTempDir(t)
	w := startWatcher(t, watchTestDebounce)
	path := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(path, []byte("v1"), 0o600))
	first, cancelFirst := watchFile(t, w, path)
	second, _ := watchFile(t, w, path)
	writeInPlace(t, path, "v2")
	first.waitFor(t, "-rw------- v2")
	second.waitFor(t, "-rw------- v2")
	cancelFirst()
	if got := w.WatchedDirs(); got != 1 {
		t.Errorf("WatchedDirs() = %d with one registration left, want 1", got)
	}
	writeInPlace(t, path, "v3")
	second.waitFor(t, "-rw------- v3")
}

func TestWatchBurstIsDebounced(t *testing.T) {
	dir := watchTempDir(t)
	w := startWatcher(t, watchTestDebounce)
	path := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(path, []byte("v1"), 0o600))
	rec, _ := watchFile(t, w, path)
	for i := range 100 {
		writeInPlace(t, path, "burst "+strconv.Itoa(i))
	}
	rec.waitFor(t, "-rw------- burst 99")
	watchBarrier(t, w, dir)
	// Each call waits for 20ms of quiet, or at most 80ms; 100 writes take a few milliseconds,
	// so this is usually 1, but a slow machine may split the burst.
	n := rec.calls.Load()
	t.Logf("100 writes gave %d calls", n)
	if n < 1 || n > 20 {
		t.Errorf("100 writes gave %d calls, want at least 1 and far fewer than 100", n)
	}
}

func TestWatchContinuousWritesAreStillReported(t *testing.T) {
	dir := watchTempDir(t)
	// A debounce far longer than the pauses between writes, even on a loaded machine.
	const debounce = 100 * time.Millisecond
	w := startWatcher(t, debounce)
	path := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(path, []byte("v1"), 0o600))
	rec, _ := watchFile(t, w, path)
	// Write without pausing until a call comes: the maximum delay must end the wait even though
	// the file never settles.
	deadline := time.Now().Add(watchTestTimeout)
	for i := 0; rec.calls.Load() == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no onChange during %v of continuous writes", watchTestTimeout)
		}
		writeInPlace(t, path, strconv.Itoa(i))
		time.Sleep(time.Millisecond)
	}
}

func TestWatchIgnoresOtherFiles(t *testing.T) {
	dir := watchTempDir(t)
	w := startWatcher(t, watchTestDebounce)
	path := filepath.Join(dir, "config.yaml")
	must(t, os.WriteFile(path, []byte("v1"), 0o600))
	rec, _ := watchFile(t, w, path)
	// Names close to the watched one, and every kind of event.
	for _, name := range []string{"config.yaml~", ".config.yaml.swp", "config.yml", "config.yaml.bak", "Config.yaml", "other"} {
		p := filepath.Join(dir, name)
		writeInPlace(t, p, "x")
		must(t, os.Chmod(p, 0o644))
		renameSave(t, p, "y")
		must(t, os.Rename(p, p+".2"))
		must(t, os.Remove(p+".2"))
	}
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	writeInPlace(t, filepath.Join(dir, "sub", "config.yaml"), "x")
	watchBarrier(t, w, dir)
	if n := rec.calls.Load(); n != 0 {
		t.Errorf("onChange called %d times for changes to other files", n)
	}
}

func TestWatchQueueOverflowReportsEverything(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skipf("no inotify queue limit to overflow: %v", err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || limit > 100_000 {
		t.Skipf("inotify queue limit %q too large to overflow in a test", b)
	}
	dir, quiet := watchTempDir(t), watchTempDir(t)
	w := newStoppedWatcher(t, watchTestDebounce)
	busy := filepath.Join(dir, "busy")
	must(t, os.WriteFile(busy, nil, 0o600))
	must(t, os.WriteFile(filepath.Join(quiet, "config.yaml"), []byte("q"), 0o600))
	_, _ = watchFile(t, w, busy)
	untouched, _ := watchFile(t, w, filepath.Join(quiet, "config.yaml"))

	// Run is not started, so nothing drains the kernel queue. Alternate between two files
	// (the kernel merges identical consecutive events) until it must have overflowed: fsnotify
	// holds one read (up to 4096 events) and the kernel queue holds limit more.
	f1, err := os.OpenFile(busy, os.O_WRONLY, 0)
	must(t, err)
	defer f1.Close()
	f2, err := os.OpenFile(filepath.Join(dir, "noise"), os.O_WRONLY|os.O_CREATE, 0o600)
	must(t, err)
	defer f2.Close()
	for range limit/2 + 4096 {
		_, err1 := f1.Write([]byte{'x'})
		_, err2 := f2.Write([]byte{'x'})
		must(t, err1)
		must(t, err2)
	}
	runWatcher(t, w)
	untouched.waitFor(t, "-rw------- q")
}

func TestWatchErrors(t *testing.T) {
	dir := watchTempDir(t)
	w := newStoppedWatcher(t, watchTestDebounce)
	if _, err := w.Watch(filepath.Join(dir, "x"), nil); err == nil {
		t.Error("Watch with a nil onChange succeeded")
	}
	if _, err := w.Watch("/", func() {}); err == nil {
		t.Error("Watch(\"/\") succeeded")
	}
	if _, err := NewWatcher(zerolog.Nop(), -time.Second); err == nil {
		t.Error("NewWatcher with a negative debounce succeeded")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Run with a canceled context: %v", err)
	}
	if err := w.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
	if _, err := w.Watch(filepath.Join(dir, "x"), func() {}); err == nil {
		t.Error("Watch after Run returned succeeded")
	}
}

func TestWatchDefaultDebounce(t *testing.T) {
	w := newStoppedWatcher(t, 0)
	if w.debounce != 50*time.Millisecond || w.maxDelay != 200*time.Millisecond {
		t.Errorf("debounce, maximum delay = %v, %v; want 50ms, 200ms", w.debounce, w.maxDelay)
	}
}

func TestResolveWatched(t *testing.T) {
	dir := watchTempDir(t)
	mkdir := func(p string) { must(t, os.MkdirAll(filepath.Join(dir, p), 0o700)) }
	file := func(p string) { must(t, os.WriteFile(filepath.Join(dir, p), nil, 0o600)) }
	link := func(target, p string) { must(t, os.Symlink(target, filepath.Join(dir, p))) }
	mkdir("real/sub")
	file("real/sub/f")
	link("real", "dirlink")
	link("sub/f", "real/rel")
	link(filepath.Join(dir, "real", "sub", "f"), "abs")
	link("abs", "chain")
	link("loop2", "loop1")
	link("loop1", "loop2")
	link("real/sub/../sub/f", "dotdot")
	link("dirlink/sub/..", "updir")
	file("plain")

	e := func(d, name string) watchedEntry { return watchedEntry{filepath.Join(dir, d), name} }
	tests := []struct {
		name, path string
		want       []watchedEntry
	}{
		{"plain file", "plain", []watchedEntry{e("", "plain")}},
		{"missing file", "nope", []watchedEntry{e("", "nope")}},
		{"missing directories", "a/b/c", []watchedEntry{e("", "a")}},
		{"file used as a directory", "plain/x", []watchedEntry{e("", "plain")}},
		{"through a directory symlink", "dirlink/sub/f", []watchedEntry{e("", "dirlink"), e("real/sub", "f")}},
		{"relative symlink", "real/rel", []watchedEntry{e("real", "rel"), e("real/sub", "f")}},
		{"chain of symlinks", "chain", []watchedEntry{e("", "chain"), e("", "abs"), e("real/sub", "f")}},
		{"symlink loop", "loop1", []watchedEntry{e("", "loop1"), e("", "loop2")}},
		{"dot-dot in a target", "dotdot", []watchedEntry{e("", "dotdot"), e("real/sub", "f")}},
		{"target ending in a directory", "updir", []watchedEntry{e("", "updir"), e("", "dirlink"), e("", "real")}},
		{"directory", "real/sub", []watchedEntry{e("real", "sub")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolveWatched(filepath.Join(dir, tt.path)); !slices.Equal(got, tt.want) {
				t.Errorf("resolveWatched(%s) =\n%v\nwant\n%v", tt.path, got, tt.want)
			}
		})
	}
}
