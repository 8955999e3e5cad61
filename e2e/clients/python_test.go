//go:build sdk

package clients

import (
	"encoding/json"
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

// debianPython is the interpreter Debian's python3-httpx installs for.
const debianPython = "/usr/bin/python3"

// TestPythonClient runs clients/python/tests against the real daemon: tokens, errors, the watch,
// the Watcher and its urllib handler, a daemon restart, and the Blaxel SDK adapter against a
// stand-in of the SDK's BlaxelAuth (the SDK cannot be installed here), also inside real httpx.
// Tokens live 40 s, so that the daemon refreshes one about 4 s after issuing it.
func TestPythonClient(t *testing.T) {
	t.Parallel()
	py := python3(t)
	w := newWorld(t, 40*time.Second, 30*time.Second) // the client's default min_ttl, which its tests use
	tests := filepath.Join(moduleRoot, "clients", "python", "tests")
	env := w.clientEnv("BLAUTH_TEST_API_URL="+w.api.Base, "BLAUTH_TEST_WORKSPACE="+workspace)

	t.Run("unittest", func(t *testing.T) {
		r := runCmd(3*time.Minute, tests, env, py, "-m", "unittest", "discover", "-s", tests, "-t", tests, "-v")
		t.Logf("python3 -m unittest (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
		if r.err != nil || r.code != 0 {
			t.Fatalf("the Python client's tests failed: %v", r.err)
		}
		if !strings.Contains(r.stderr, "\nOK") || strings.Contains(r.stderr, "skipped") {
			t.Errorf("unittest did not end with OK, or skipped tests")
		}
		w.checkSecrets(t, "the Python tests' output", r.stdout+r.stderr)
	})
	t.Run("httpx", func(t *testing.T) {
		if exec.Command(debianPython, "-c", "import httpx").Run() != nil {
			e2etest.Missing(t, "httpx for "+debianPython, "apt-get install python3-httpx, or .ci/install-deps.sh")
		}
		r := runCmd(time.Minute, tests, append(env, "PYTHONPATH="+filepath.Join(moduleRoot, "clients", "python")+":"+tests),
			debianPython, "-m", "unittest", "-v", "httpx_blaxel_test")
		t.Logf("%s -m unittest httpx_blaxel_test (exit %d):\n%s%s", debianPython, r.code, r.stdout, r.stderr)
		if r.err != nil || r.code != 0 || !strings.Contains(r.stderr, "\nOK") {
			t.Fatalf("the adapter inside httpx failed: %v", r.err)
		}
	})

	if n := w.api.TokenRequestsBy(blaxeltest.NotDaemon); n != 0 {
		t.Errorf("%d token requests came from outside blauthd, want 0", n)
	}
	st := w.api.APICalls()
	// One rejection is expected: the handler limited to another host sends no token.
	if st.Rejected != st.Reasons[blaxeltest.RejectNoToken] || st.Rejected > 1 {
		t.Errorf("the API rejected %d calls %v; only the one sent without a token should be", st.Rejected, st.Reasons)
	}
	w.checkSecrets(t, "blauthd's log", w.d.Log())
	t.Logf("FIGURES python unit tests: API calls ok %d rejected %d %v, blauthd token requests %d, daemons started %d",
		st.OK, st.Rejected, st.Reasons, w.api.TokenRequestsBy(blaxeltest.IsDaemon), len(w.d.Pids()))
}

// TestPythonSocketPath: blauth.py finds the daemon where ipc.SocketPath (blauthd, the helper,
// systemd's socket unit) puts it.
func TestPythonSocketPath(t *testing.T) {
	t.Parallel()
	py := python3(t)
	xdg := e2etest.ShortTempDir(t, "bpx")
	envs := []map[string]string{
		{"BLAUTH_SOCKET": "/x/y.sock", "XDG_RUNTIME_DIR": xdg},
		{"XDG_RUNTIME_DIR": xdg},
		{"XDG_RUNTIME_DIR": "~/run", "HOME": xdg},
		{"XDG_RUNTIME_DIR": "relative/dir", "TMPDIR": xdg},
		{"TMPDIR": xdg},
		{},
	}
	var want strings.Builder
	for _, env := range envs {
		getenv := func(k string) string { return env[k] }
		want.WriteString(ipc.SocketPath(getenv, ipc.DefaultRuntimeDir(getenv)) + "\n")
	}
	in, _ := json.Marshal(envs)
	script := "import json, sys, blauth\nfor env in json.load(sys.stdin): print(blauth.socket_path(env))"
	cmd := exec.Command(py, "-c", script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "PYTHONPATH=" + filepath.Join(moduleRoot, "clients", "python"), "PYTHONDONTWRITEBYTECODE=1"}
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil || string(out) != want.String() {
		t.Errorf("for %s:\nwant %q\n got %q (%v)", in, want.String(), out, err)
	}
}
