package daemon_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/token"
)

// waitLogin polls login_wait the way the helper does, until it stops answering login_pending.
func waitLogin(t *testing.T, td *daemontest.Daemon, flow string) (*ipc.Message, error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := td.Do(t, ipc.KeyAction, ipc.ActionLoginWait, "flow", flow, "wait", "1")
		if ipc.ErrorCode(err) == ipc.CodeLoginPending {
			continue
		}
		return resp, err
	}
	t.Fatal("device login never finished")
	return nil, nil
}

func TestDeviceLoginSavesTheSessionWhereBLWould(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	api.SetSlowDownAt(2)
	old := token.SlowDownStep
	token.SlowDownStep = 200 * time.Millisecond
	defer func() { token.SlowDownStep = old }()
	td := daemontest.Start(t, daemontest.Options{API: api, BLConfig: "context:\n  workspace: other\nworkspaces:\n- name: other\n  credentials:\n    apiKey: \"k\"\ntracking: true\n"})

	start, err := td.Do(t, ipc.KeyAction, ipc.ActionLoginStart, ipc.KeyWorkspace, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	code := start.Value(ipc.KeyUserCode)
	if code == "" || !strings.Contains(start.Value(ipc.KeyVerificationURIComplete), code) || start.Value(ipc.KeyInterval) != "1" {
		t.Fatalf("login_start answer: %v", start.Fields)
	}
	// The user has not approved yet: pending, more than once (and one slow_down on the way).
	testkit.WaitFor(t, 30*time.Second, "three polls at an interval of 1s", func() bool { return api.Count("device_code") >= 3 })
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionLoginWait, "flow", start.Value("flow"), "wait", "0"); ipc.ErrorCode(err) != ipc.CodeLoginPending {
		t.Fatalf("before approval: %v, want login_pending", err)
	}
	api.ApproveDevice(code, true)
	if _, err := waitLogin(t, td, start.Value("flow")); err != nil {
		t.Fatalf("after approval: %v", err)
	}
	c, err := sources.ReadBLConfig(filepath.Join(td.Home, ".blaxel", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	w, ok := c.Workspace("fresh")
	if !ok || w.Credentials.AccessToken == "" || w.Credentials.RefreshToken == "" || w.Credentials.DeviceCode == "" || w.Credentials.ExpiresIn != 7200 {
		t.Fatalf("saved session: %+v", w)
	}
	if o, _ := c.Workspace("other"); o.Credentials.APIKey != "k" || !c.Tracking {
		t.Fatal("the login lost the rest of the file")
	}
	if tok := td.Token(t, ipc.KeyWorkspace, "fresh"); tok.Token != w.Credentials.AccessToken || tok.Kind != ipc.KindLogin {
		t.Fatalf("the new session is not served at once: %+v", tok)
	}
}

func TestDeviceLoginDenied(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	td := daemontest.Start(t, daemontest.Options{API: api})
	start, err := td.Do(t, ipc.KeyAction, ipc.ActionLoginStart, ipc.KeyWorkspace, "w")
	if err != nil {
		t.Fatal(err)
	}
	api.ApproveDevice(start.Value(ipc.KeyUserCode), false)
	_, err = waitLogin(t, td, start.Value("flow"))
	if ipc.ErrorCode(err) != ipc.CodeLoginExpired || !strings.Contains(err.Error(), "access_denied") {
		t.Fatalf("denied login: %v, want login_expired naming access_denied", err)
	}
}

func TestCallersWithTheSameServiceAccountShareOneExchange(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	cc := api.AddClient("ci", "s")
	td := daemontest.Start(t, daemontest.Options{API: api})
	var first string
	for i := 0; i < 50; i++ {
		// Fifty CI processes, each sending its own environment and directory.
		tok := td.Token(t, ipc.KeyDir, t.TempDir(), "env.BL_WORKSPACE", "ci-ws", "env.BL_CLIENT_CREDENTIALS", cc, "env.BL_API_URL", api.Base)
		if first == "" {
			first = tok.Token
		}
		if tok.Token != first || tok.Source != "caller_env:BL_CLIENT_CREDENTIALS" {
			t.Fatalf("caller %d got %+v", i, tok)
		}
	}
	if n := api.Count("client_credentials"); n != 1 {
		t.Fatalf("50 callers with one service account caused %d exchanges", n)
	}
}
