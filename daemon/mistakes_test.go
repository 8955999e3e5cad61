package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/internal/testkit/memkeyring"
	"github.com/blauth/blauth/ipc"
)

// A bl config whose acme-ci entry spells its keys the way neither bl nor blauth reads them.
const misspeltBLConfig = `context:
  workspace: acme-prod
workspaces:
- name: acme-prod
  credentials:
    apiKey: "bl_FAKE-PROD"
- name: acme-prof
  credentials:
    apiKey: "bl_FAKE-PROF"
- name: acme-ci
  credentials:
    api_key: "bl_FAKE-SECRET-CI"
    refreshToken: FAKE-SECRET-REFRESH
tracking: false
`

func getError(t *testing.T, socket string, kv ...string) *ipc.Error {
	t.Helper()
	_, err := askOn(t, socket, append([]string{ipc.KeyAction, ipc.ActionGet}, kv...)...)
	e, ok := err.(*ipc.Error)
	if !ok {
		t.Fatalf("get %v: %v, want an error answer", kv, err)
	}
	return e
}

// A workspace no source knows is probably a typo of one they do know: the answer names it. On
// a scoped socket only the scope's workspaces may be named.
func TestUnknownWorkspaceGetsDidYouMean(t *testing.T) {
	scoped := filepath.Join(testkit.ShortTempDir(t, "bd"), "fwd", "scoped.sock")
	td := daemontest.Start(t, daemontest.Options{BLConfig: misspeltBLConfig, Mutate: func(c *daemon.Config) {
		c.ScopedSockets = []daemon.ScopedSocket{{Path: scoped, Workspaces: []string{"acme-pro"}}}
	}})
	e := getError(t, td.Socket, ipc.KeyWorkspace, "acme-prd")
	if e.Code != ipc.CodeNoCredentials || !strings.Contains(e.Message, "did you mean acme-prod?") {
		t.Errorf("acme-prd: %s %q; want no_credentials with did you mean acme-prod?", e.Code, e.Message)
	}
	e = getError(t, td.Socket, ipc.KeyWorkspace, "ACME-PROD")
	if !strings.Contains(e.Message, "did you mean acme-prod?") {
		t.Errorf("ACME-PROD: %q; want the name in its own case suggested", e.Message)
	}
	e = getError(t, td.Socket, ipc.KeyWorkspace, "acme-pro")
	if !strings.Contains(e.Message, "did you mean acme-prod or acme-prof?") {
		t.Errorf("acme-pro: %q; want both near names, closest first", e.Message)
	}
	e = getError(t, td.Socket, ipc.KeyWorkspace, "zeta")
	if strings.Contains(e.Message, "did you mean") {
		t.Errorf("zeta: %q; nothing is near it", e.Message)
	}
	// A caller's .env names a workspace too.
	dir := testkit.ShortTempDir(t, "bd")
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("BL_WORKSPACE=project-x\nBL_API_KEY=bl_FAKE-DOTENV\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e = getError(t, td.Socket, ipc.KeyWorkspace, "project-y", ipc.KeyDir, dir)
	if !strings.Contains(e.Message, "did you mean project-x?") {
		t.Errorf("project-y beside a .env of project-x: %q", e.Message)
	}
	// The scoped socket serves acme-pro, which has no credential: its peer is not told the
	// names of the workspaces it may not see.
	e = getError(t, scoped, ipc.KeyWorkspace, "acme-pro")
	if e.Code != ipc.CodeNoCredentials || strings.Contains(e.Message, "acme-prod") || strings.Contains(e.Message, "acme-prof") || strings.Contains(e.Hint, "acme-prod") {
		t.Errorf("acme-pro on the scoped socket: %s %q hint %q; want no other workspace named", e.Code, e.Message, e.Hint)
	}
}

// A credentials key bl does not read is named, with its line and the spelling bl expects, in
// the error for that workspace and in status; its value never is.
func TestMisspeltCredentialKeyIsNamed(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{BLConfig: misspeltBLConfig})
	e := getError(t, td.Socket, ipc.KeyWorkspace, "acme-ci")
	for _, want := range []string{"api_key: (line 12)", "bl reads apiKey:", "refreshToken: (line 13)", "bl reads refresh_token:", "config.yaml"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("acme-ci's error %q does not say %q", e.Message, want)
		}
	}
	if !strings.Contains(e.Hint, "rename") {
		t.Errorf("acme-ci's hint %q does not say to rename the key", e.Hint)
	}
	st := status(t, td)
	var ci *ipc.WorkspaceStatus
	for i := range st.Workspaces {
		if st.Workspaces[i].Workspace == "acme-ci" {
			ci = &st.Workspaces[i]
		}
	}
	if ci == nil || len(ci.Warnings) != 2 || !strings.Contains(ci.Warnings[0], "api_key:") || !strings.Contains(ci.Warnings[0], "apiKey:") {
		t.Fatalf("status of acme-ci: %+v; want its two misspelt keys as warnings", ci)
	}
	for _, w := range st.Workspaces {
		if w.Workspace != "acme-ci" && len(w.Warnings) > 0 {
			t.Errorf("status of %s has warnings %q", w.Workspace, w.Warnings)
		}
	}
	all := e.Message + e.Hint + strings.Join(ci.Warnings, " ")
	for _, secret := range []string{"FAKE-SECRET-CI", "FAKE-SECRET-REFRESH"} {
		if strings.Contains(all, secret) {
			t.Errorf("a value was quoted: %q", all)
		}
	}
}

// The hint for a workspace without a credential lists every way to give it one, the keyring's
// only when the daemon has one; no source it does not use is blamed.
func TestNoCredentialsHintListsTheWays(t *testing.T) {
	t.Run("without keyring", func(t *testing.T) {
		td := daemontest.Start(t, daemontest.Options{})
		e := getError(t, td.Socket, ipc.KeyWorkspace, "acme")
		for _, want := range []string{"`bl login acme`", "BL_API_KEY", "BL_CLIENT_CREDENTIALS", ".env", "`blauth-helper login acme`"} {
			if !strings.Contains(e.Hint, want) {
				t.Errorf("hint %q does not name %s", e.Hint, want)
			}
		}
		if strings.Contains(e.Hint, "--api-key") || strings.Contains(e.Message+e.Hint, "keyring") || strings.Contains(e.Hint, "fix the source") {
			t.Errorf("a daemon without keyring: %q / %q; want no keyring and no source to fix", e.Message, e.Hint)
		}
	})
	t.Run("with keyring", func(t *testing.T) {
		td := daemontest.Start(t, daemontest.Options{Keyring: memkeyring.New(nil)})
		e := getError(t, td.Socket, ipc.KeyWorkspace, "acme")
		if !strings.Contains(e.Hint, "`blauth-helper login acme --api-key`") || !strings.Contains(e.Hint, ".env") {
			t.Errorf("hint %q; want the keyring's way too", e.Hint)
		}
	})
}
