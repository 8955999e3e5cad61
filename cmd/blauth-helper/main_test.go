package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// binDir holds blauthd and blauth-helper, built once by TestMain, side by side as they are
// installed (the helper finds blauthd beside itself when it starts one).
var binDir string

func helperBin() string { return filepath.Join(binDir, "blauth-helper") }
func daemonBin() string { return filepath.Join(binDir, "blauthd") }

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// The helper sends the caller's BL_* variables and starts daemons: nothing from the
	// environment of whoever runs the tests may leak into them.
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if (strings.HasPrefix(k, "BL_") || strings.HasPrefix(k, "BLAUTH_") || k == "GIT_EXEC_PATH") && k != "BLAUTH_TEST_KEYRING_HOME" {
			os.Unsetenv(k)
		}
	}
	dir, err := os.MkdirTemp("", "bhbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator), "./cmd/blauthd", "./cmd/blauth-helper")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the binaries: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// shortTempDir returns a fresh directory with a short path, for sockets.
func shortTempDir(t *testing.T) string { return testkit.ShortTempDir(t, "bh") }

// testDaemon is a real daemon, in this process, on a real socket.
type testDaemon struct{ *daemontest.Daemon }

type daemonOpts struct {
	env      []string // the daemon's own environment
	blConfig string   // $HOME/.blaxel/config.yaml
	api      *blaxeltest.Server
	keyring  sources.KeyringStore // nil: the daemon runs without the OS keyring
}

// startDaemon starts a daemon and points the helper at it (BLAUTH_SOCKET, BLAUTH_NO_SPAWN=1) for
// the rest of the test.
func startDaemon(t *testing.T, o daemonOpts) *testDaemon {
	t.Helper()
	td := daemontest.Start(t, daemontest.Options{Env: o.env, BLConfig: o.blConfig, API: o.api, Keyring: o.keyring,
		Socket: filepath.Join(shortTempDir(t), "blauthd.sock")})
	t.Setenv(ipc.SocketEnv, td.Socket)
	t.Setenv("BLAUTH_NO_SPAWN", "1")
	return &testDaemon{td}
}

// newAPI starts a fake Blaxel API for the test.
func newAPI(t *testing.T) *blaxeltest.Server {
	t.Helper()
	api := blaxeltest.New(0)
	t.Cleanup(api.Close)
	return api
}

// daemonToken asks the daemon directly, over the socket, what it serves for workspace.
func daemonToken(t *testing.T, socket, workspace string) *ipc.Token {
	return daemontest.Get(t, socket, workspace)
}

// result is what a helper run printed.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// testSystem is the helper's system in a test: the test process's environment and directory,
// the given streams, and exec running the command as a child whose exit status it returns.
func testSystem(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) system {
	sys := osSystem()
	sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
	sys.exec = func(path string, argv, env []string) (int, error) {
		cmd := exec.CommandContext(ctx, path, argv[1:]...)
		cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, stdin, stdout, stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), nil
		}
		return 0, err
	}
	return sys
}

// runHelper runs the helper in this process, as main does, with the process environment.
func runHelper(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, testSystem(ctx, strings.NewReader(stdin), &out, &errb))
	return result{code, out.String(), errb.String()}
}

// proc describes a process run of a built binary.
type proc struct {
	env   []string // the whole environment, on top of PATH and HOME
	dir   string
	stdin string
}

// baseEnv is a minimal environment: PATH, a private HOME, no BL_* variables.
func baseEnv(t *testing.T) []string {
	t.Helper()
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + shortTempDir(t), "LANG=C"}
}

// runProc runs name with args, bounded in time, and returns what it printed.
func runProc(t *testing.T, p proc, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(baseEnv(t), p.env...)
	cmd.Dir = p.dir
	cmd.Stdin = strings.NewReader(p.stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok || ctx.Err() != nil {
			t.Fatalf("run %s %q: %v (stderr %q)", name, args, err, errb.String())
		}
		code = ee.ExitCode()
	}
	return result{code, out.String(), errb.String()}
}

// socketEnv points a process at the test daemon without ever starting one.
func (td *testDaemon) SocketEnv() []string {
	return []string{ipc.SocketEnv + "=" + td.Socket, "BLAUTH_NO_SPAWN=1"}
}

func mustCode(t *testing.T, r result, want int) {
	t.Helper()
	if r.code != want {
		t.Fatalf("want exit %d, got %s", want, r)
	}
}

// mustFail checks a failure as a user sees it: the exit status, a blauth: error line and a
// hint on stderr, and nothing on stdout.
func mustFail(t *testing.T, r result, want int) {
	t.Helper()
	mustCode(t, r, want)
	if r.stdout != "" {
		t.Errorf("stdout must stay empty on failure, got %q", r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "blauth: error: ") || !strings.Contains(r.stderr, "\nblauth: hint: ") {
		t.Errorf("stderr must hold a blauth: error line and a blauth: hint line, got %q", r.stderr)
	}
}
