package resolver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/sources"
)

// hostileBound is how long any resolution may take in these tests: generous, so that a slow
// machine never fails them, while a read that blocks for ever does.
const hostileBound = 30 * time.Second

// resolveWithin runs r.Resolve(req) and fails the test if it has not returned within
// hostileBound. A resolution stuck for ever is left behind; the test's cleanup unblocks it.
func resolveWithin(t *testing.T, r *Resolver, req Request) (*Resolution, error) {
	t.Helper()
	type result struct {
		res *Resolution
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := r.Resolve(req)
		done <- result{res, err}
	}()
	select {
	case got := <-done:
		return got.res, got.err
	case <-time.After(hostileBound):
		testkit.ReleaseFIFOs()
		t.Fatalf("Resolve(%s) did not return within %s", req.Dir, hostileBound)
		return nil, nil
	}
}

// TestDotenvThatIsNotAFileIsRefused covers the files a repository can hold in place of a .env
// (git stores symlinks and nothing stops a FIFO): each is refused, quickly and by name, and the
// request fails instead of falling back to the daemon's own credential.
func TestDotenvThatIsNotAFileIsRefused(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T, path string)
		want string
	}{
		{"fifo", func(t *testing.T, path string) { testkit.MkFIFO(t, path) }, "is a FIFO, not a regular file; refusing to read it"},
		{"symlink to dev zero", func(t *testing.T, path string) { must(t, os.Symlink("/dev/zero", path)) }, "is a device, not a regular file; refusing to read it"},
		{"directory", func(t *testing.T, path string) { must(t, os.Mkdir(path, 0o700)) }, "is a directory, not a regular file; refusing to read it"},
		{"twenty megabytes of junk", func(t *testing.T, path string) {
			must(t, os.WriteFile(path, []byte(strings.Repeat("x", 20<<20)), 0o600))
		}, "is larger than 256 KiB (20971520 bytes); refusing to read it"},
		{"one byte over the cap", func(t *testing.T, path string) {
			must(t, os.WriteFile(path, []byte("BL_API_KEY=k\n"+strings.Repeat("#", sources.MaxDotenvBytes-13+1)), 0o600))
		}, "is larger than 256 KiB (262145 bytes); refusing to read it"},
	}
	for _, watch := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/watched=%v", tt.name, watch), func(t *testing.T) {
				w := newWorld(t)
				w.environ = []string{"BL_WORKSPACE=acme", "BL_API_KEY=daemon_key"}
				path := filepath.Join(w.dir, sources.DotenvName)
				tt.make(t, path)
				r := w.resolver(t, watch)
				res, err := resolveWithin(t, r, Request{Dir: w.dir})
				if !errors.Is(err, ErrSource) {
					t.Fatalf("Resolve = %v, %v; want ErrSource (no fallback to the daemon's key)", res, err)
				}
				if !strings.Contains(err.Error(), path+" "+tt.want) {
					t.Fatalf("error %q does not say %q", err, path+" "+tt.want)
				}
				if res == nil || res.Credential != nil {
					t.Fatalf("a credential was served: %+v", res)
				}
				if len(res.Errors) != 1 || res.Errors[0].Source != (sources.Provenance{Kind: sources.SourceDotenv, Where: path}) {
					t.Fatalf("source errors = %+v, want the .env's", res.Errors)
				}
			})
		}
	}
}

// TestDotenvAtTheCapIsRead: the cap refuses what is over it, not what is at it.
func TestDotenvAtTheCapIsRead(t *testing.T) {
	w := newWorld(t)
	content := "BL_WORKSPACE=acme\nBL_API_KEY=k\n"
	w.writeDotenv(t, content+strings.Repeat("#", sources.MaxDotenvBytes-len(content)))
	res, err := resolveWithin(t, w.resolver(t, false), Request{Dir: w.dir})
	if err != nil || res.Credential.APIKey != "k" {
		t.Fatalf("got %+v, %v", res, err)
	}
}

// TestDotenvSymlinkToAFileIsFollowed: a .env that links to a regular file is read.
func TestDotenvSymlinkToAFileIsFollowed(t *testing.T) {
	w := newWorld(t)
	target := filepath.Join(t.TempDir(), "shared.env")
	must(t, os.WriteFile(target, []byte("BL_WORKSPACE=acme\nBL_API_KEY=linked\n"), 0o600))
	must(t, os.Symlink(target, filepath.Join(w.dir, sources.DotenvName)))
	res, err := resolveWithin(t, w.resolver(t, true), Request{Dir: w.dir})
	if err != nil || res.Credential.APIKey != "linked" {
		t.Fatalf("got %+v, %v", res, err)
	}
}

// TestMissingDotenvIsAbsent: no .env, or a link to nothing, is simply no .env.
func TestMissingDotenvIsAbsent(t *testing.T) {
	for _, dangling := range []bool{false, true} {
		w := newWorld(t)
		w.environ = []string{"BL_WORKSPACE=acme", "BL_API_KEY=daemon_key"}
		if dangling {
			must(t, os.Symlink(filepath.Join(w.dir, "nowhere"), filepath.Join(w.dir, sources.DotenvName)))
		}
		res, err := resolveWithin(t, w.resolver(t, true), Request{Dir: w.dir})
		if err != nil || res.Credential.APIKey != "daemon_key" || len(res.Errors) != 0 {
			t.Fatalf("dangling=%v: got %+v, %v", dangling, res, err)
		}
	}
}

// TestFIFODotenvDoesNotBlockOtherCallers: while a caller whose .env is a FIFO (never opened for
// writing) is being resolved, callers in other directories are served; the FIFO's caller gets a
// clear error.
func TestFIFODotenvDoesNotBlockOtherCallers(t *testing.T) {
	for _, watch := range []bool{false, true} {
		t.Run(fmt.Sprintf("watched=%v", watch), func(t *testing.T) {
			w := newWorld(t)
			fifoDir := filepath.Join(t.TempDir(), "fifo-project")
			must(t, os.Mkdir(fifoDir, 0o700))
			fifo := filepath.Join(fifoDir, sources.DotenvName)
			testkit.MkFIFO(t, fifo)
			w.writeDotenv(t, "BL_WORKSPACE=acme\nBL_API_KEY=normal\n")
			r := w.resolver(t, watch)

			var wg sync.WaitGroup
			var fifoErr atomic.Value
			wg.Go(func() {
				_, err := r.Resolve(Request{Dir: fifoDir, Workspace: "acme"})
				fifoErr.Store(fmt.Sprint(err))
			})
			var served atomic.Int32
			for range 8 {
				wg.Go(func() {
					for range 10 {
						if res, err := r.Resolve(Request{Dir: w.dir}); err == nil && res.Credential.APIKey == "normal" {
							served.Add(1)
						}
					}
				})
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(hostileBound):
				testkit.ReleaseFIFOs()
				t.Fatalf("resolutions still running after %s (%d of 80 normal ones served)", hostileBound, served.Load())
			}
			if served.Load() != 80 {
				t.Errorf("%d of 80 normal resolutions served", served.Load())
			}
			if e, _ := fifoErr.Load().(string); !strings.Contains(e, fifo+" is a FIFO") {
				t.Errorf("the FIFO's caller got %q, want an error naming the FIFO", e)
			}
		})
	}
}

// TestUnreadableDotenvIsAnError: a .env the daemon may not read (mode 000) fails the request
// instead of letting a lower source answer. Root reads any file, so as root the check runs in a
// child process that has dropped to another user.
func TestUnreadableDotenvIsAnError(t *testing.T) {
	if os.Getenv(unreadableChildEnv) != "" {
		unreadableDotenvCheck(t, os.Getenv(unreadableChildEnv))
		return
	}
	base := t.TempDir()
	// t.TempDir makes base inside a 0700 directory of its own: open both to the child.
	must(t, os.Chmod(filepath.Dir(base), 0o755))
	must(t, os.Chmod(base, 0o755))
	dir := filepath.Join(base, "project")
	must(t, os.Mkdir(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, sources.DotenvName), []byte("BL_API_KEY=unreadable\n"), 0o600))
	must(t, os.Chmod(filepath.Join(dir, sources.DotenvName), 0))
	if os.Geteuid() != 0 {
		unreadableDotenvCheck(t, dir)
		return
	}
	// The test binary must be reachable by the unprivileged user.
	bin := filepath.Join(base, "sources.test")
	data, err := os.ReadFile(os.Args[0])
	must(t, err)
	must(t, os.WriteFile(bin, data, 0o755))
	for d := base; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("%s is not searchable by other users; cannot run the unprivileged child", d)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestUnreadableDotenvIsAnError$", "-test.v", "-test.count=1")
	cmd.Dir = base
	cmd.Env = []string{unreadableChildEnv + "=" + dir, "PATH=/usr/bin:/bin", "HOME=" + base}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil || !strings.Contains(string(out), "unreadable check passed") {
		t.Fatalf("child: %v", err)
	}
}

const unreadableChildEnv = "BLAUTH_UNREADABLE_DOTENV_DIR"

func unreadableDotenvCheck(t *testing.T, dir string) {
	for _, watch := range []bool{false, true} {
		cfg := Config{Environ: []string{"BL_WORKSPACE=acme", "BL_API_KEY=daemon_key"}, Log: zerolog.New(zerolog.NewTestWriter(t))}
		if watch {
			cfg.Watcher = startWatcher(t, cfg.Log, 10*time.Millisecond)
		}
		r := New(context.Background(), cfg)
		defer r.Close()
		res, err := resolveWithin(t, r, Request{Dir: dir})
		path := filepath.Join(dir, sources.DotenvName)
		if !errors.Is(err, ErrSource) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("watched=%v: Resolve = %+v, %v; want ErrSource naming %s and the reason", watch, res, err, path)
		}
	}
	if !t.Failed() {
		t.Log("unreadable check passed")
	}
}
