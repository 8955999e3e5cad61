package sources

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// handWritten is a complete config as a CI job writes it with a heredoc: no tracking line.
const handWritten = `context:
  workspace: ci
workspaces:
- name: ci
  credentials:
    apiKey: "bl_ci"
`

// TestHandWrittenBLConfigIsRead: a valid config without the tracking line bl always writes is
// read once it is seen unchanged a moment later.
func TestHandWrittenBLConfigIsRead(t *testing.T) {
	w := newWorld(t)
	w.writeBL(t, handWritten)
	r := w.resolver(t, false)
	res, err := r.Resolve(Request{})
	if err != nil || res.Workspace != "ci" || res.Credential.APIKey != "bl_ci" {
		t.Fatalf("got %+v, %v; want the hand-written file's key", res, err)
	}
	if errs := r.SourceErrors(); len(errs) != 0 {
		t.Fatalf("source errors: %+v", errs)
	}
}

// TestBLConfigCutShortWhileChangingIsNotBelieved: a file that looks cut short and is different
// when read again is a write in progress: the last good view stays and the file is reported.
func TestBLConfigCutShortWhileChangingIsNotBelieved(t *testing.T) {
	w := newWorld(t)
	w.writeBL(t, blFull)
	r := w.resolver(t, false)
	// bl keeps writing: every second look finds other bytes.
	var mu sync.Mutex
	writing, n := true, 0
	r.waitRecheck = func() {
		mu.Lock()
		defer mu.Unlock()
		if writing {
			n++
			w.writeBL(t, strings.Replace(blFull[:strings.Index(blFull, "- name: ctx-ws")], "bl_config_key", "k"+strings.Repeat("x", n), 1))
		}
	}
	w.writeBL(t, blFull[:strings.Index(blFull, "- name: ctx-ws")]) // valid YAML, cut after acme
	r.Reload(context.Background())
	if res, err := r.Resolve(Request{Workspace: "ctx-ws"}); err != nil || res.Credential.Kind != KindLogin {
		t.Fatalf("a workspace the cut file lacks: %+v, %v; want the last good view", res, err)
	}
	errs := r.SourceErrors()
	if len(errs) != 1 || !strings.Contains(errs[0].Error, "cut short") {
		t.Fatalf("source errors %+v; want the cut file reported", errs)
	}
	// bl is done: the complete file is believed.
	mu.Lock()
	writing = false
	mu.Unlock()
	w.writeBL(t, strings.Replace(blFull, "bl_config_key", "done", 1))
	r.Reload(context.Background())
	if res, err := r.Resolve(Request{Workspace: "acme"}); err != nil || res.Credential.APIKey != "done" || len(r.SourceErrors()) != 0 {
		t.Fatalf("after the write: %+v, %v, %+v", res, err, r.SourceErrors())
	}
}

// TestInvalidBLConfigStaysRefused: a file that is not valid YAML is not believed however long it
// stays the same.
func TestInvalidBLConfigStaysRefused(t *testing.T) {
	w := newWorld(t)
	w.writeBL(t, "context: [\nworkspaces:\n")
	r := w.resolver(t, false)
	r.Reload(context.Background())
	if _, err := r.Resolve(Request{Workspace: "acme"}); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("Resolve: %v", err)
	}
	if errs := r.SourceErrors(); len(errs) != 1 || !strings.Contains(errs[0].Error, "invalid YAML") {
		t.Fatalf("source errors %+v", errs)
	}
}

// TestUnsafeBLConfigIsRefused: a config another user could have written is not served, its last
// good view is dropped, and the error names the path, the mode and the fix.
func TestUnsafeBLConfigIsRefused(t *testing.T) {
	tests := []struct {
		name          string
		dirMode, mode os.FileMode
		symlinkTarget bool // the config is a link to a file in another directory, which gets dirMode
		want          string
	}{
		{"world-writable directory", 0o777, 0o600, false, "the directory DIR (it holds the bl config) is writable by other users (mode 0777)"},
		{"group-writable directory", 0o770, 0o600, false, "is writable by other users (mode 0770)"},
		{"world-writable file", 0o700, 0o666, false, "the bl config FILE is writable by other users (mode 0666)"},
		{"group-writable file", 0o700, 0o620, false, "the bl config FILE is writable by other users (mode 0620)"},
		{"link into a world-writable directory", 0o777, 0o600, true, "is writable by other users (mode 0777)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			w.writeBL(t, blFull)
			r := w.resolver(t, false)
			if _, err := r.Resolve(Request{Workspace: "acme"}); err != nil {
				t.Fatal(err)
			}
			dir, file := filepath.Dir(w.blPath), w.blPath
			if tt.symlinkTarget {
				dir = filepath.Join(t.TempDir(), "dotfiles")
				must(t, os.Mkdir(dir, 0o700))
				file = filepath.Join(dir, "config.yaml")
				must(t, os.Rename(w.blPath, file))
				must(t, os.Symlink(file, w.blPath))
			}
			must(t, os.Chmod(file, tt.mode))
			must(t, os.Chmod(dir, tt.dirMode))
			t.Cleanup(func() { os.Chmod(dir, 0o700) })
			r.Reload(context.Background())

			if res, err := r.Resolve(Request{Workspace: "acme"}); !errors.Is(err, ErrNoCredentials) {
				t.Fatalf("Resolve: %+v, %v; want the config's credentials no longer served", res, err)
			}
			errs := r.SourceErrors()
			want := strings.NewReplacer("DIR", dir, "FILE", file).Replace(tt.want)
			fix := "fix: chmod 700 " + dir
			if tt.mode&0o022 != 0 {
				fix = "fix: chmod 600 " + file
			}
			if len(errs) != 1 || errs[0].Source.Kind != SourceBLConfig || !strings.Contains(errs[0].Error, want) || !strings.Contains(errs[0].Error, fix) {
				t.Fatalf("source errors %+v; want one saying %q and %q", errs, want, fix)
			}

			// Fixed as the message says: served again.
			must(t, os.Chmod(file, 0o600))
			must(t, os.Chmod(dir, 0o700))
			r.Reload(context.Background())
			if res, err := r.Resolve(Request{Workspace: "acme"}); err != nil || res.Credential.APIKey != "bl_config_key" || len(r.SourceErrors()) != 0 {
				t.Fatalf("after the fix: %+v, %v, %+v", res, err, r.SourceErrors())
			}
		})
	}
}

// TestStickyWorldWritableDirectoryIsAccepted: in a directory such as /tmp (sticky bit), others
// cannot rename or delete our file, so a file of ours there is used.
func TestStickyWorldWritableDirectoryIsAccepted(t *testing.T) {
	w := newWorld(t)
	w.writeBL(t, blFull)
	dir := filepath.Dir(w.blPath)
	must(t, os.Chmod(dir, 0o777|os.ModeSticky))
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	r := w.resolver(t, false)
	if res, err := r.Resolve(Request{Workspace: "acme"}); err != nil || res.Credential.APIKey != "bl_config_key" || len(r.SourceErrors()) != 0 {
		t.Fatalf("got %+v, %v, %+v", res, err, r.SourceErrors())
	}
}

// TestBLConfigOwnedByAnotherUserIsRefused needs root to give a file away; the rule itself is
// checked for every user by TestUnsafeReason.
func TestBLConfigOwnedByAnotherUserIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: cannot give a file to another user; TestUnsafeReason covers the rule")
		return
	}
	for _, what := range []string{"file", "directory"} {
		w := newWorld(t)
		w.writeBL(t, blFull)
		p := w.blPath
		if what == "directory" {
			p = filepath.Dir(w.blPath)
		}
		must(t, os.Chown(p, 65534, 65534))
		r := w.resolver(t, false)
		if _, err := r.Resolve(Request{Workspace: "acme"}); !errors.Is(err, ErrNoCredentials) {
			t.Fatalf("%s owned by another user: Resolve = %v", what, err)
		}
		errs := r.SourceErrors()
		if len(errs) != 1 || !strings.Contains(errs[0].Error, p+" ") || !strings.Contains(errs[0].Error, "is owned by uid 65534, not by you (uid 0)") ||
			!strings.Contains(errs[0].Error, "fix: chown 0 "+p) {
			t.Fatalf("%s: source errors %+v", what, errs)
		}
	}
}

func TestUnsafeReason(t *testing.T) {
	const me = 1000
	tests := []struct {
		isDir       bool
		mode        os.FileMode
		owner       int
		wantPhrases []string // empty: safe
	}{
		{false, 0o600, me, nil},
		{false, 0o644, me, nil},
		{false, 0o600, 0, nil},
		{true, 0o700, me, nil},
		{true, 0o755, 0, nil},
		{true, 0o777 | os.ModeSticky, 0, nil},
		{false, 0o600, 1001, []string{"is owned by uid 1001, not by you (uid 1000)", "fix: chown 1000 P"}},
		{true, 0o700, 1001, []string{"the directory P (it holds the bl config) is owned by uid 1001"}},
		{false, 0o602, me, []string{"the bl config P is writable by other users (mode 0602)", "fix: chmod 600 P"}},
		{true, 0o775, me, []string{"is writable by other users (mode 0775)", "fix: chmod 700 P"}},
		{false, 0o666 | os.ModeSticky, me, []string{"writable by other users"}}, // the sticky bit excuses only a directory
	}
	for _, tt := range tests {
		got := unsafeReason("P", tt.isDir, tt.mode, tt.owner, me)
		if len(tt.wantPhrases) == 0 {
			if got != "" {
				t.Errorf("dir=%v mode=%v owner=%d: %q, want safe", tt.isDir, tt.mode, tt.owner, got)
			}
			continue
		}
		for _, p := range tt.wantPhrases {
			if !strings.Contains(got, p) {
				t.Errorf("dir=%v mode=%v owner=%d: %q does not say %q", tt.isDir, tt.mode, tt.owner, got, p)
			}
		}
	}
}

// TestBLConfigThatIsNotAFileIsRefused: a FIFO or a device in place of the config is refused at
// once, never read.
func TestBLConfigThatIsNotAFileIsRefused(t *testing.T) {
	for _, kind := range []string{"fifo", "device"} {
		w := newWorld(t)
		must(t, os.MkdirAll(filepath.Dir(w.blPath), 0o700))
		want := " is a FIFO, not a regular file; refusing to read it"
		if kind == "fifo" {
			mkfifo(t, w.blPath)
		} else {
			must(t, os.Symlink("/dev/zero", w.blPath))
			want = " is a device, not a regular file; refusing to read it"
		}
		done := make(chan *Resolver, 1)
		go func() { done <- w.resolver(t, true) }()
		var r *Resolver
		select {
		case r = <-done:
		case <-time.After(hostileBound):
			releaseFIFOs()
			t.Fatalf("%s: NewResolver still reading after %s", kind, hostileBound)
		}
		errs := r.SourceErrors()
		if len(errs) != 1 || !strings.Contains(errs[0].Error, w.blPath+want) {
			t.Fatalf("%s: source errors %+v", kind, errs)
		}
	}
}

// TestExhaustedFileWatchingIsASourceError: when inotify has no watch left, the bl config is read
// on reload only and .env files on every request, and status says why.
func TestExhaustedFileWatchingIsASourceError(t *testing.T) {
	w := newWorld(t)
	w.writeBL(t, blFull)
	w.writeDotenv(t, "BL_API_KEY=from_dotenv\n")
	log := zerolog.New(zerolog.NewTestWriter(t))
	wt, err := NewWatcher(log, 10*time.Millisecond)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go wt.Run(ctx)
	realAdd := wt.addDir
	wt.mu.Lock()
	wt.addDir = func(string) error { return syscall.ENOSPC }
	wt.mu.Unlock()

	r := NewResolver(ctx, ResolverConfig{BLConfigPath: w.blPath, Watcher: wt, Log: log})
	defer r.Close()
	res, err := r.Resolve(Request{Dir: w.dir, Workspace: "acme"})
	if err != nil || res.Credential.APIKey != "from_dotenv" {
		t.Fatalf("Resolve: %+v, %v; want the .env, read without a watch", res, err)
	}
	want := map[string]string{
		SourceBLConfig: "file watching is exhausted (fs.inotify.max_user_watches): " + w.blPath + " is re-read only on reload",
		SourceDotenv:   "file watching is exhausted (fs.inotify.max_user_watches): .env files such as " + filepath.Join(w.dir, DotenvName) + " are read on every request",
	}
	errs := r.SourceErrors()
	if len(errs) != 2 {
		t.Fatalf("source errors %+v; want one for the bl config and one for .env files", errs)
	}
	for _, e := range errs {
		if !strings.Contains(e.Error, want[e.Source.Kind]) {
			t.Errorf("%s: %q; want %q", e.Source.Kind, e.Error, want[e.Source.Kind])
		}
	}

	// Watches freed: the next reload watches the bl config again.
	wt.mu.Lock()
	wt.addDir = realAdd
	wt.mu.Unlock()
	r.Reload(ctx)
	if res, err := r.Resolve(Request{Dir: w.dir, Workspace: "acme"}); err != nil || res.Credential.APIKey != "from_dotenv" {
		t.Fatalf("Resolve after the reload: %+v, %v", res, err)
	}
	if errs := r.SourceErrors(); len(errs) != 0 {
		t.Errorf("still reported after a reload that could watch: %+v", errs)
	}
	if n := r.WatchedDotenvs(); n != 1 {
		t.Errorf("%d .env files watched after the reload, want 1", n)
	}
}
