package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// mustNotName fails if any field of m holds one of the local strings.
func mustNotName(t *testing.T, what string, m *ipc.Message, local ...string) {
	t.Helper()
	for _, f := range m.Fields {
		for _, l := range local {
			if strings.Contains(f.Value, l) {
				t.Errorf("%s: %s=%q names %q", what, f.Key, f.Value, l)
			}
		}
	}
}

// A scoped socket's peer is on another machine or in a container: its answers name sources by
// kind only, and hold no path of the daemon's machine, in tokens, watch messages or errors. The
// daemon's own socket keeps the full provenance.
func TestScopedSocketDisclosesNothingLocal(t *testing.T) {
	scoped := filepath.Join(testkit.ShortTempDir(t, "bd"), "fwd", "scoped.sock")
	td := daemontest.Start(t, daemontest.Options{BLConfig: twoWorkspaces, Mutate: func(c *daemon.Config) {
		c.ScopedSockets = []daemon.ScopedSocket{{Path: scoped, Workspaces: []string{"a", "c"}}}
	}})
	sd := &daemontest.Daemon{Socket: scoped}
	blPath := filepath.Join(td.Home, ".blaxel", "config.yaml")
	local := []string{td.Home, filepath.Dir(td.Home), "/.blaxel"}

	m, err := sd.Do(t, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, "a")
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := ipc.ParseToken(m); err != nil || tok.Token != "key-a" || tok.Source != "bl_config" {
		t.Fatalf("get a on the scoped socket: %v %v, want key-a from source bl_config", tok, err)
	}
	mustNotName(t, "get", m, local...)
	w := sd.Watch(t, ipc.KeyWorkspace, "a")
	m = w.Next(t)
	if m.Value(ipc.KeySource) != "bl_config" {
		t.Fatalf("watch on the scoped socket: %v", m.Fields)
	}
	mustNotName(t, "watch", m, local...)
	if tok := td.Token(t, ipc.KeyWorkspace, "a"); tok.Source != "bl_config:"+blPath {
		t.Fatalf("the main socket's source %q, want bl_config:%s", tok.Source, blPath)
	}

	// A bl config that no longer parses: the last good view still serves a, and an error for a
	// workspace it does not hold names the broken source. On the main socket with its path and
	// reason, on the scoped one by its kind only.
	if err := os.WriteFile(blPath, []byte("workspaces: [unclosed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the broken bl config named on the main socket", func() bool {
		_, err := td.Do(t, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, "c")
		return err != nil && strings.Contains(err.Error(), blPath)
	})
	m, _ = sd.Do(t, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, "c")
	if m == nil || ipc.ErrorCode(ipc.AsError(m)) != ipc.CodeNoCredentials || !strings.Contains(m.Value(ipc.KeyMessage), "the bl_config source could not be used") {
		t.Fatalf("get c on the scoped socket: %v, want no_credentials naming the bl_config source", m.Fields)
	}
	mustNotName(t, "error", m, local...)
	m = sd.Watch(t, ipc.KeyWorkspace, "c").Next(t)
	if ipc.AsError(m) == nil {
		t.Fatalf("watch c: %v, want an error", m.Fields)
	}
	mustNotName(t, "watch error", m, local...)
}

// An unparsable BL_API_URL (here holding a password and a bad escape) is a configuration error:
// answered bad_request, never quoted in answers, status or the log, never classed auth_failed.
func TestUnparsableAPIURLIsABadRequest(t *testing.T) {
	const password = "s3cret-pw"
	bad := "https://me:" + password + "@api.example.test/v0/%zz"
	var logs testkit.SyncBuffer
	td := daemontest.Start(t, daemontest.Options{
		Env: []string{"BL_WORKSPACE=acme", "BL_API_URL=" + bad, "BL_CLIENT_CREDENTIALS=Y2xpZW50OnNlY3JldA=="},
		Mutate: func(c *daemon.Config) {
			c.Log = zerolog.New(&logs)
		},
	})
	check := func(what string, m *ipc.Message, err error) {
		t.Helper()
		if m == nil || ipc.ErrorCode(err) != ipc.CodeBadRequest || !strings.Contains(err.Error(), "BL_API_URL") {
			t.Fatalf("%s: %v (code %s), want bad_request naming BL_API_URL", what, err, ipc.ErrorCode(err))
		}
		mustNotName(t, what, m, password, "me:", "api.example.test", "%zz")
	}
	// The daemon's own service account.
	m, err := td.Do(t, ipc.KeyAction, ipc.ActionGet)
	check("a daemon-held credential", m, err)
	// A caller's own API key, with its own bad BL_API_URL.
	m, err = td.Do(t, ipc.KeyAction, ipc.ActionGet, "env.BL_WORKSPACE", "mine", "env.BL_API_KEY", "k", "env.BL_API_URL", bad)
	check("a caller's API key", m, err)
	if !strings.Contains(err.Error(), "caller") {
		t.Errorf("the caller's bad URL is not said to be the caller's: %v", err)
	}
	// A device login for the workspace goes to the same base.
	m, err = td.Do(t, ipc.KeyAction, ipc.ActionLoginStart, ipc.KeyWorkspace, "acme")
	if m == nil || ipc.ErrorCode(err) != ipc.CodeBadRequest {
		t.Fatalf("login_start: %v, want bad_request", err)
	}
	mustNotName(t, "login_start", m, password, "me:", "%zz")
	st, err := td.Do(t, ipc.KeyAction, ipc.ActionStatus)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(st.Long(ipc.KeyJSON), password) {
		t.Errorf("status quotes the password: %s", st.Long(ipc.KeyJSON))
	}
	td.Stop()
	if strings.Contains(logs.String(), password) || strings.Contains(logs.String(), "me:") {
		t.Errorf("the log quotes the URL:\n%s", logs.String())
	}
}
