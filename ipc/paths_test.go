package ipc

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSocketPath(t *testing.T) {
	uid := strconv.Itoa(os.Getuid())
	private := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		env        map[string]string
		runtimeDir string
		want       string
	}{
		{"override wins", map[string]string{"BLAUTH_SOCKET": "/x/y.sock", "XDG_RUNTIME_DIR": "/run/user/1"}, "/run/user/1", "/x/y.sock"},
		{"XDG_RUNTIME_DIR", map[string]string{"XDG_RUNTIME_DIR": "/run/user/7"}, "/run/user/7", "/run/user/7/blauth/blauthd.sock"},
		{"private default runtime dir", map[string]string{}, private, filepath.Join(private, "blauth", "blauthd.sock")},
		{"missing runtime dir falls back to tmp", map[string]string{"TMPDIR": "/var/tmp"}, "/nonexistent/run/user/1", "/var/tmp/blauth-" + uid + "/blauthd.sock"},
		{"no runtime dir at all", map[string]string{}, "", "/tmp/blauth-" + uid + "/blauthd.sock"},
		// A relative XDG_RUNTIME_DIR does not count: the default runtime dir is used only if it
		// exists and is private, as when the variable is unset (docs/PROTOCOL.md, step 3).
		{"relative XDG_RUNTIME_DIR is ignored", map[string]string{"XDG_RUNTIME_DIR": "run", "TMPDIR": "/var/tmp"}, "/nonexistent/run/user/1", "/var/tmp/blauth-" + uid + "/blauthd.sock"},
		{"~ in XDG_RUNTIME_DIR is the home", map[string]string{"XDG_RUNTIME_DIR": "~/run", "HOME": "/home/me"}, "/home/me/run", "/home/me/run/blauth/blauthd.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SocketPath(envOf(tt.env), tt.runtimeDir); got != tt.want {
				t.Fatalf("SocketPath = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPrepareSocketDir(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "a", "b")
	if err := PrepareSocketDir(fresh); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(base, "a"), fresh} {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: mode %v, want 0700", d, fi.Mode().Perm())
		}
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := PrepareSocketDir(open); !errors.Is(err, ErrUnsafeDir) {
		t.Fatalf("open dir: err = %v, want ErrUnsafeDir", err)
	}
	file := filepath.Join(base, "file")
	_ = os.WriteFile(file, nil, 0o600)
	if err := PrepareSocketDir(file); !errors.Is(err, ErrUnsafeDir) {
		t.Fatalf("file: err = %v, want ErrUnsafeDir", err)
	}
	link := filepath.Join(base, "link")
	_ = os.Symlink(fresh, link)
	if err := PrepareSocketDir(link); !errors.Is(err, ErrUnsafeDir) {
		t.Fatalf("symlink: err = %v, want ErrUnsafeDir", err)
	}
}

func TestDialReportsUnreachable(t *testing.T) {
	_, err := Dial(filepath.Join(t.TempDir(), "none.sock"), 0)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
}
