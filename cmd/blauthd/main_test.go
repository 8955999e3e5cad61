package main

import (
	"bytes"
	"io"
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
	for _, v := range []string{"", "/run/user/4242", "/tmp/custom-runtime", "relative/run", "~/run"} {
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
		{"bad token auth", []string{"--token-url", "http://127.0.0.1:1/t", "--token-auth", "magic", "--log-format", "json"}, 2, "token-auth is \"magic\""},
		{"refresh-left over 1", []string{"--refresh-left", "2"}, 2, "refresh-left is 2; it is the fraction"},
		{"negative refresh-left", []string{"--refresh-left=-0.5"}, 2, "refresh-left is -0.5"},
		{"negative min-ttl", []string{"--min-ttl", "-5s"}, 2, "min-ttl is -5s"},
		{"keyring timeout 0", []string{"--keyring-timeout", "0"}, 2, "keyring-timeout is 0s"},
		{"relative socket", []string{"--socket", "run/blauthd.sock"}, 2, "is relative"},
		{"socket path too long", []string{"--socket", "/tmp/blauth-test-" + strings.Repeat("d", 100) + "/blauthd.sock"}, 2, "holds at most 107"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(tt.args, io.Discard, &stderr); code != tt.code || !strings.Contains(stderr.String(), tt.err) {
				t.Fatalf("run(%q) = %d, stderr %q; want %d mentioning %q", tt.args, code, stderr.String(), tt.code, tt.err)
			}
		})
	}
	// Refused before anything was made.
	if _, err := os.Stat("/tmp/blauth-test-" + strings.Repeat("d", 100)); !os.IsNotExist(err) {
		t.Fatal("a refused socket path's directory was created")
	}
	if _, err := os.Stat("run"); !os.IsNotExist(err) {
		t.Fatal("a refused relative socket path's directory was created")
	}
}

func TestConsoleLogsHaveNoColourOffATerminal(t *testing.T) {
	var b bytes.Buffer
	log, err := newLogger(&b, "console", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Str("workspace", "acme").Msg("hello")
	if strings.Contains(b.String(), "\x1b[") || !strings.Contains(b.String(), "workspace=acme") {
		t.Fatalf("console log to a file: %q", b.String())
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
	code := run([]string{"--socket", sock, "--log-format", "json", "--no-keyring"}, io.Discard, &stderr)
	if code != 3 || !strings.Contains(stderr.String(), "already running") {
		t.Fatalf("second daemon: exit %d, stderr %q; want 3 and 'already running'", code, stderr.String())
	}
}
