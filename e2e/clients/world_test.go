//go:build sdk

package clients

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
	"github.com/blauth/blauth/ipc"
)

// workspace is the one the daemon's service account belongs to; the fake API refuses its
// tokens for any other.
const workspace = "acme"

// world is one test's fake Blaxel API, private HOME and socket-activated blauthd, which holds a
// service account in its environment: the clients hold no secret.
type world struct {
	api    *blaxeltest.Server
	home   *e2etest.Home
	d      *e2etest.Activated
	secret string // the service account's BL_CLIENT_CREDENTIALS value
}

// newWorld starts the world with tokens living ttl and a daemon whose --min-ttl is minTTL.
func newWorld(t *testing.T, ttl, minTTL time.Duration) *world {
	t.Helper()
	w := &world{api: e2etest.StartAPI(t, ttl), home: e2etest.NewHome(t)}
	e2etest.CheckNothingLeft(t, w.home)
	w.secret = w.api.AddClient("clients-sa", "clients-sa-secret-0001")
	w.api.BindClient("clients-sa", workspace)
	w.d = e2etest.StartActivated(t, e2etest.DaemonOptions{Bin: bins.Blauthd, Home: w.home, APIURL: w.api.Base,
		Args: []string{"--min-ttl", minTTL.String()},
		Env:  []string{"BL_WORKSPACE=" + workspace, "BL_CLIENT_CREDENTIALS=" + w.secret}})
	return w
}

// clientEnv is a client process's whole environment: an empty HOME, the daemon's socket, the
// API's address and the workspace; no BL_API_KEY, no BL_CLIENT_CREDENTIALS.
func (w *world) clientEnv(more ...string) []string {
	env := append(w.home.HomeEnv(), ipc.SocketEnv+"="+w.d.Socket, "BL_API_URL="+w.api.Base, "BL_WORKSPACE="+workspace,
		"PYTHONPATH="+filepath.Join(moduleRoot, "clients", "python"), "PYTHONDONTWRITEBYTECODE=1")
	return append(env, more...)
}

// checkSecrets fails the test if text (a process's output, the daemon's log) holds the service
// account's secret or any JWT (every token the fake API issues starts with eyJ).
func (w *world) checkSecrets(t *testing.T, what, text string) {
	t.Helper()
	if strings.Contains(text, w.secret) || strings.Contains(text, "clients-sa-secret-0001") {
		t.Errorf("%s holds the service account's secret", what)
	}
	if strings.Contains(text, "eyJ") {
		t.Errorf("%s holds a token (a JWT)", what)
	}
}

// run is one finished process.
type run struct {
	code           int
	stdout, stderr string
	err            error
}

// runCmd runs name with args to its end, bounded by limit.
func runCmd(limit time.Duration, dir string, env []string, name string, args ...string) run {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = env, dir
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := run{stdout: out.String(), stderr: errb.String(), err: err}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		r.err = ctx.Err()
	}
	return r
}

// python3 returns the interpreter that python3 on PATH runs (resolved once: a version manager's
// shim costs a second or more per start), Python 3.8 or later; the tests fail without it.
func python3(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is required to test clients/python: %v", err)
	}
	r := runCmd(30*time.Second, "", os.Environ(), py, "-c", "import sys; print(sys.version_info >= (3, 8)); print(sys.executable)")
	lines := strings.Fields(r.stdout)
	if len(lines) != 2 || lines[0] != "True" {
		t.Fatalf("%s is not Python 3.8 or later: %q %q", py, r.stdout, r.stderr)
	}
	t.Logf("python3: %s", lines[1])
	return lines[1]
}
