package main

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/adrg/xdg"

	"github.com/blauth/blauth/ipc"
)

// The helper resolves the socket with the standard library only; the daemon with adrg/xdg. They
// must agree, or the helper would knock on the wrong door.
func TestHelperAndDaemonAgreeOnTheRuntimeDir(t *testing.T) {
	if runtime.GOOS == "darwin" {
		t.Skip("on macOS both use the temporary directory, not xdg's runtime dir")
	}
	for _, v := range []string{"", "/run/user/4242", "/tmp/custom-runtime"} {
		t.Run("XDG_RUNTIME_DIR="+v, func(t *testing.T) {
			t.Setenv("XDG_RUNTIME_DIR", v)
			xdg.Reload()
			if got, want := ipc.DefaultRuntimeDir(os.Getenv), runtimeDir(); got != want {
				t.Fatalf("ipc says %q, adrg/xdg says %q", got, want)
			}
		})
	}
	xdg.Reload()
}

func TestFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"unknown log format", []string{"--log-format", "xml"}, 2, "unknown log format"},
		{"unknown log level", []string{"--log-level", "loud"}, 2, "unknown log level"},
		{"stray argument", []string{"extra"}, 2, "unexpected argument"},
		{"bad token auth", []string{"--token-url", "http://127.0.0.1:1/t", "--token-auth", "magic", "--log-format", "json"}, 2, "--token-auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(tt.args, &stderr); code != tt.code || !strings.Contains(stderr.String(), tt.err) {
				t.Fatalf("run(%q) = %d, stderr %q; want %d mentioning %q", tt.args, code, stderr.String(), tt.code, tt.err)
			}
		})
	}
}

func TestSecondDaemonExitsWithAClearMessage(t *testing.T) {
	dir, err := os.MkdirTemp("", "bd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := dir + "/s/blauthd.sock"
	_ = os.Mkdir(dir+"/s", 0o700)
	stop, err := listenForTest(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var stderr bytes.Buffer
	code := run([]string{"--socket", sock, "--log-format", "json", "--no-keyring"}, &stderr)
	if code != 3 || !strings.Contains(stderr.String(), "already running") {
		t.Fatalf("second daemon: exit %d, stderr %q; want 3 and 'already running'", code, stderr.String())
	}
}
