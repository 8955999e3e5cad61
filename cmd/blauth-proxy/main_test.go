package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// bin is blauth-proxy, built once by TestMain: exec's signal handling and exit statuses are
// those of a process.
var bin string

func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "BL_") || strings.HasPrefix(k, "BLAUTH_") {
			os.Unsetenv(k)
		}
	}
	dir, err := os.MkdirTemp("", "bpbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "blauth-proxy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build blauth-proxy: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proxyEnv starts the fake API and a daemon, and returns a caller's environment that points
// blauth-proxy at the daemon and holds a service account of the fake for acme, which the
// daemon exchanges and the child must not see.
func proxyEnv(t *testing.T) []string {
	api := blaxeltest.New(0)
	t.Cleanup(api.Close)
	cc := api.AddClient("sa", "sa-secret")
	d := daemontest.Start(t, daemontest.Options{})
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + d.Home, ipc.SocketEnv + "=" + d.Socket,
		"BL_WORKSPACE=acme", "BL_API_URL=" + api.Base, "BL_CLIENT_CREDENTIALS=" + cc}
}

func TestExecStatusesAndEnvironment(t *testing.T) {
	env := proxyEnv(t)
	show := `printf '%s|%s|%s|%s|%s\n' "$BL_WORKSPACE" "${#BL_API_KEY}" "$BL_API_URL" "$BL_RUN_URL" "${BL_CLIENT_CREDENTIALS-unset}"`
	for _, tc := range []struct {
		name   string
		script string
		status int
	}{
		{"exit status", show + "; exit 7", 7},
		{"killed by a signal", show + "; kill -KILL $$", 128 + 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, "exec", "--", "sh", "-c", tc.script)
			cmd.Env = env
			out, err := cmd.Output()
			if cmd.ProcessState.ExitCode() != tc.status {
				t.Fatalf("exit %d (%v), want %d", cmd.ProcessState.ExitCode(), err, tc.status)
			}
			f := strings.Split(strings.TrimSpace(string(out)), "|")
			if len(f) != 5 || f[0] != "acme" || f[1] != "43" || !strings.HasPrefix(f[2], "http://127.0.0.1:") || !strings.HasSuffix(f[2], "/api") ||
				f[3] != strings.TrimSuffix(f[2], "/api")+"/run" || f[4] != "unset" {
				t.Errorf("the child saw %q; want acme, a 43-character key, the proxy's /api and /run, and no BL_CLIENT_CREDENTIALS", out)
			}
			// The proxy ends with its child.
			host := strings.TrimSuffix(strings.TrimPrefix(f[2], "http://"), "/api")
			if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
				// A connect to a loopback port nobody listens on can meet itself (the kernel
				// picks that port as the source): that is no listener.
				self := c.LocalAddr().String() == c.RemoteAddr().String()
				c.Close()
				if !self {
					t.Errorf("the proxy still listens on %s after its child ended", host)
				}
			}
		})
	}
	t.Run("no such command", func(t *testing.T) {
		cmd := exec.Command(bin, "exec", "--", "no-such-command-blauth")
		cmd.Env = env
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != exitNotFound || !strings.Contains(string(out), "blauth: error: no-such-command-blauth") {
			t.Errorf("exit %d, %q; want 127 and an error", cmd.ProcessState.ExitCode(), out)
		}
	})
}

// SIGTERM, SIGHUP and SIGINT sent to blauth-proxy reach its child, which decides how to end.
func TestExecForwardsSignals(t *testing.T) {
	env := proxyEnv(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "exec", "--", "sh", "-c",
				`trap 'echo got; exit 42' TERM HUP INT; echo ready; while :; do sleep 0.05; done`)
			cmd.Env = env
			// Its own session: no terminal, so a SIGINT is never taken for one typed at it.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Whatever happens, nothing of the session (the proxy is its leader) outlives the test.
			t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
			sc := bufio.NewScanner(out)
			if !sc.Scan() || sc.Text() != "ready" {
				t.Fatalf("the child did not start: %q", sc.Text())
			}
			_ = cmd.Process.Signal(sig)
			got := sc.Scan() && sc.Text() == "got"
			_ = cmd.Wait()
			if !got || cmd.ProcessState.ExitCode() != 42 {
				t.Errorf("after %s: the child saw it: %v; exit %d, want 42 (the child's own)", sig, got, cmd.ProcessState.ExitCode())
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"exec"}, {"exec", "--"}, {"mcp"}, {"mcp", "http://example.test/mcp"}, {"mcp", "a", "b"}, {"frob"}, {"--min-ttl", "x", "exec", "--", "true"}, {"--frob", "exec"}} {
		var stderr strings.Builder
		code := run(context.Background(), args, env{stdin: strings.NewReader(""), stdout: &strings.Builder{}, stderr: &stderr,
			getenv: func(string) string { return "" }, environ: func() []string { return nil }, getwd: os.Getwd})
		if code != exitUsage || !strings.HasPrefix(stderr.String(), "blauth: error: ") {
			t.Errorf("%q: exit %d, %q; want 2 and a blauth: error line", args, code, stderr.String())
		}
	}
}
