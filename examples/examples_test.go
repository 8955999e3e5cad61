// Package examples_test runs the `bl token` drop-ins (Python and Node, each built on its client
// library in clients/) against a live daemon, so that the examples the docs show keep working.
package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
)

// client is one example program.
type client struct {
	name   string
	interp string
	script string // absolute path
}

func clients(t *testing.T) []client {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	cs := []client{
		{"python", "python3", filepath.Join(wd, "python", "blauth_token.py")},
		{"node", "node", filepath.Join(wd, "node", "blauth-token.js")},
	}
	for _, c := range cs {
		// The examples are part of the product: a machine without the interpreter fails the
		// tests rather than silently skipping them.
		if _, err := exec.LookPath(c.interp); err != nil {
			t.Fatalf("%s is required to test the %s example: %v", c.interp, c.name, err)
		}
	}
	return cs
}

// shortTempDir returns a fresh directory with a short path, for sockets.
func shortTempDir(t *testing.T) string { return testkit.ShortTempDir(t, "bhx") }

// startDaemon runs a real daemon in this process on socket, with env as its environment.
func startDaemon(t *testing.T, socket string, env []string) {
	daemontest.Start(t, daemontest.Options{Socket: socket, Env: env})
}

// served asks the daemon directly for what it serves.
func served(t *testing.T, socket, workspace string) *ipc.Token {
	return daemontest.Get(t, socket, workspace)
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// runClient runs the example with a minimal environment plus env, in dir.
func runClient(t *testing.T, c client, env []string, dir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.interp, append([]string{c.script}, args...)...)
	// PYTHONDONTWRITEBYTECODE: importing the library must not leave __pycache__ in the tree.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + shortTempDir(t), "PYTHONDONTWRITEBYTECODE=1"}, env...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok || ctx.Err() != nil {
			t.Fatalf("%s %s %q: %v (stderr %q)", c.interp, c.script, args, err, errb.String())
		}
		code = ee.ExitCode()
	}
	return result{code, out.String(), errb.String()}
}

func TestExamples(t *testing.T) {
	cs := clients(t)
	api := blaxeltest.New(0)
	t.Cleanup(api.Close)
	cc := api.AddClient("sa-id", "sa-secret")
	dir := shortTempDir(t)
	socket := filepath.Join(dir, "blauthd.sock")
	startDaemon(t, socket, []string{"BL_API_URL=" + api.Base, "BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc})
	sock := []string{ipc.SocketEnv + "=" + socket}
	want := served(t, socket, "acme")
	if want.Expiry.IsZero() {
		t.Fatal("the service account's token has no expiry")
	}

	t.Run("clients", func(t *testing.T) {
		for _, c := range cs {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				t.Run("token", func(t *testing.T) {
					r := runClient(t, c, sock, dir)
					if r.code != 0 || r.stdout != want.Token+"\n" || r.stderr != "" {
						t.Errorf("want the daemon's token %q, got %s", want.Token, r)
					}
				})
				t.Run("json", func(t *testing.T) {
					r := runClient(t, c, sock, dir, "--json", "acme")
					var got struct {
						Token, Workspace string
						Expiry           int64
					}
					if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil {
						t.Fatalf("--json: %s", r)
					}
					if got.Token != want.Token || got.Workspace != "acme" || got.Expiry != want.Expiry.Unix() {
						t.Errorf("want %s, acme, %d; got %+v", want.Token, want.Expiry.Unix(), got)
					}
				})
				t.Run("caller environment", func(t *testing.T) {
					r := runClient(t, c, append(sock, "BL_WORKSPACE=mine", "BL_API_KEY=caller key"), dir)
					if r.code != 0 || r.stdout != "caller key\n" {
						t.Errorf("want the caller's BL_API_KEY, got %s", r)
					}
				})
				t.Run("caller .env", func(t *testing.T) {
					proj := shortTempDir(t)
					if err := os.WriteFile(filepath.Join(proj, ".env"), []byte("BL_WORKSPACE=proj\nBL_API_KEY=dotenv-key\n"), 0o600); err != nil {
						t.Fatal(err)
					}
					r := runClient(t, c, sock, proj, "--json")
					if r.code != 0 || !strings.Contains(r.stdout, `"dotenv-key"`) || !strings.Contains(r.stdout, `"proj"`) {
						t.Errorf("want the .env's key and workspace, got %s", r)
					}
				})
				t.Run("unknown workspace", func(t *testing.T) {
					r := runClient(t, c, sock, dir, "nobody")
					if r.code != 4 || r.stdout != "" || !strings.Contains(r.stderr, "no_credentials") {
						t.Errorf("want exit 4, no_credentials on stderr and nothing on stdout, got %s", r)
					}
				})
				t.Run("line break in the workspace", func(t *testing.T) {
					r := runClient(t, c, sock, dir, "acme\naction=status")
					if r.code != 2 || r.stdout != "" {
						t.Errorf("a workspace holding LF must be refused before sending, with exit 2, got %s", r)
					}
				})
				t.Run("unreachable", func(t *testing.T) {
					r := runClient(t, c, []string{ipc.SocketEnv + "=" + filepath.Join(dir, "none.sock")}, dir)
					if r.code != 3 || r.stdout != "" || !strings.Contains(r.stderr, "unreachable") {
						t.Errorf("want exit 3 and unreachable on stderr, got %s", r)
					}
				})
			})
		}
	})

	// Both examples and the daemon's cache: one exchange served everything above.
	if n := api.Count("client_credentials"); n != 1 {
		t.Errorf("the token endpoint saw %d exchanges, want 1", n)
	}
}

// The examples find a daemon at the default path, with no BLAUTH_SOCKET.
func TestExamplesDefaultPath(t *testing.T) {
	cs := clients(t)
	xdg := shortTempDir(t)
	socket := filepath.Join(xdg, "blauth", "blauthd.sock")
	startDaemon(t, socket, []string{"BL_WORKSPACE=acme", "BL_API_KEY=xdg-key"})
	for _, c := range cs {
		t.Run(c.name, func(t *testing.T) {
			r := runClient(t, c, []string{"XDG_RUNTIME_DIR=" + xdg}, xdg)
			if r.code != 0 || r.stdout != "xdg-key\n" {
				t.Errorf("want the token through $XDG_RUNTIME_DIR/blauth/blauthd.sock, got %s", r)
			}
		})
	}
}
