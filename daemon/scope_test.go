package daemon_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

const twoWorkspaces = "context:\n  workspace: b\nworkspaces:\n- name: a\n  credentials:\n    apiKey: \"key-a\"\n- name: b\n  credentials:\n    apiKey: \"key-b\"\ntracking: false\n"

// askOn sends one request on socket.
func askOn(t *testing.T, socket string, kv ...string) (*ipc.Message, error) {
	t.Helper()
	c, err := ipc.Dial(socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.Do(ipc.NewMessage(append([]string{ipc.KeyVersion, ipc.Version}, kv...)...))
}

func TestScopedSocketServesOnlyItsWorkspaces(t *testing.T) {
	scoped := filepath.Join(testkit.ShortTempDir(t, "bd"), "fwd", "scoped.sock")
	td := daemontest.Start(t, daemontest.Options{BLConfig: twoWorkspaces, Mutate: func(c *daemon.Config) {
		c.ScopedSockets = []daemon.ScopedSocket{{Path: scoped, Workspaces: []string{"a"}}}
	}})
	get := func(kv ...string) (*ipc.Token, error) {
		resp, err := askOn(t, scoped, append([]string{ipc.KeyAction, ipc.ActionGet}, kv...)...)
		if err != nil {
			return nil, err
		}
		return ipc.ParseToken(resp)
	}
	if tok, err := get(); err != nil || tok.Token != "key-a" {
		t.Fatalf("default on a socket scoped to a: %v %v", tok, err)
	}
	if _, err := get(ipc.KeyWorkspace, "b"); ipc.ErrorCode(err) != ipc.CodeForbidden || !strings.Contains(err.Error(), "not served on this socket") {
		t.Fatalf("workspace b on a socket scoped to a: %v", err)
	}
	// The peer's variables and directory are another machine's: its key is not used, its
	// .env not read, even for the scoped workspace.
	dir := testkit.ShortTempDir(t, "bd")
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("BL_WORKSPACE=a\nBL_API_KEY=from-dotenv\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := get(ipc.KeyWorkspace, "a", ipc.KeyDir, dir, "env.BL_API_KEY", "peer-key"); err != nil || tok.Token != "key-a" {
		t.Fatalf("a with the peer's key and .Env: %v %v", tok, err)
	}
	if tok, err := get("env.BL_WORKSPACE", "a"); err != nil || tok.Workspace != "a" {
		t.Fatalf("BL_WORKSPACE from the peer picks the workspace: %v %v", tok, err)
	}
	for _, a := range []string{ipc.ActionStatus, ipc.ActionErase, ipc.ActionReload, ipc.ActionStop, ipc.ActionKeyringSet, ipc.ActionKeyringDelete, ipc.ActionLoginStart} {
		if _, err := askOn(t, scoped, ipc.KeyAction, a, ipc.KeyWorkspace, "a"); ipc.ErrorCode(err) != ipc.CodeForbidden {
			t.Errorf("%s on the scoped socket: %v, want forbidden", a, err)
		}
	}
	if _, err := askOn(t, scoped, ipc.KeyAction, ipc.ActionPing); err != nil {
		t.Errorf("ping on the scoped socket: %v", err)
	}
	// The daemon's own socket still serves everything.
	if tok := td.Token(t, ipc.KeyWorkspace, "b"); tok.Token != "key-b" {
		t.Fatalf("the main socket: %v", tok)
	}
	fi, err := os.Stat(scoped)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("scoped socket: %v %v, want mode 0600", fi, err)
	}
	td.Stop()
	if _, err := os.Stat(scoped); !os.IsNotExist(err) {
		t.Fatal("the scoped socket is left after the daemon stopped")
	}
}

func TestScopedSocketPathsAreChecked(t *testing.T) {
	for _, s := range []daemon.ScopedSocket{{Path: "rel.sock", Workspaces: []string{"a"}}, {Path: "/tmp/x.sock"}, {Path: "/tmp/x.sock", Workspaces: []string{""}}} {
		cfg := daemon.Config{SocketPath: "/tmp/blauth-test.sock", ScopedSockets: []daemon.ScopedSocket{s}}
		if err := cfg.Validate(); err == nil {
			t.Errorf("scoped socket %+v was accepted", s)
		}
	}
}

func TestMetricsSayWhatHappenedAndHoldNoSecret(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	cc := api.AddClient("sa", "secret")
	for _, named := range []bool{false, true} {
		td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme-secret-name", "BL_CLIENT_CREDENTIALS=" + cc}, Mutate: func(c *daemon.Config) {
			c.MetricsListen, c.MetricsWorkspaces = "127.0.0.1:0", named
		}})
		tok := td.Token(t)
		w := td.Watch(t)
		w.Next(t)
		_, text := scrapeMetrics(t, td)
		for _, want := range []string{
			`blauth_tokens_served_total{kind="client_credentials"} 2`,
			`blauth_exchanges_total{kind="client_credentials",result="ok"} 1`,
			"blauth_watchers 1",
			`blauth_token_expiry_seconds{kind="client_credentials",source="daemon_env"`,
			"# TYPE blauth_refreshes_total counter",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %q:\n%s", want, text)
			}
		}
		if strings.Contains(text, tok.Token) || strings.Contains(text, cc) {
			t.Fatal("metrics hold a secret")
		}
		if got := strings.Contains(text, "acme-secret-name"); got != named {
			t.Errorf("workspace names in metrics: %v, want %v", got, named)
		}
		td.Stop()
	}
}

// scrapeMetrics GETs td's /metrics: its content type and its text.
func scrapeMetrics(t *testing.T, td *daemontest.Daemon) (contentType, text string) {
	t.Helper()
	resp, err := http.Get("http://" + td.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Get("Content-Type"), string(body)
}
