package resolver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/dotenv"
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
			if len(errs) != 1 || errs[0].Source.Kind != sources.SourceBLConfig || !strings.Contains(errs[0].Error, want) || !strings.Contains(errs[0].Error, fix) {
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
		t.Skip("not root: cannot give a file to another user; TestUnsafeReason covers the rule")
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

// TestBLConfigThatIsNotAFileIsRefused: a FIFO or a device in place of the config is refused at
// once, never read.
func TestBLConfigThatIsNotAFileIsRefused(t *testing.T) {
	for _, kind := range []string{"fifo", "device"} {
		w := newWorld(t)
		must(t, os.MkdirAll(filepath.Dir(w.blPath), 0o700))
		want := " is a FIFO, not a regular file; refusing to read it"
		if kind == "fifo" {
			testkit.MkFIFO(t, w.blPath)
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
			testkit.ReleaseFIFOs()
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
	wt := startWatcher(t, log, 10*time.Millisecond)
	ctx := context.Background()
	wt.FailWatchesForTest(syscall.ENOSPC)

	r := New(ctx, Config{BLConfigPath: w.blPath, Watcher: wt, Log: log})
	defer r.Close()
	res, err := r.Resolve(Request{Dir: w.dir, Workspace: "acme"})
	if err != nil || res.Credential.APIKey != "from_dotenv" {
		t.Fatalf("Resolve: %+v, %v; want the .env, read without a watch", res, err)
	}
	want := map[string]string{
		sources.SourceBLConfig: "file watching is exhausted (fs.inotify.max_user_watches): " + w.blPath + " is re-read only on reload",
		sources.SourceDotenv:   "file watching is exhausted (fs.inotify.max_user_watches): .env files such as " + filepath.Join(w.dir, dotenv.Name) + " are read on every request",
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
	wt.FailWatchesForTest(nil)
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

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
