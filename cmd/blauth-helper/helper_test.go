package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/ipc"
)

// twoWorkspaces is a bl config with two API-key workspaces; acme-a is the context.
const twoWorkspaces = `context:
  workspace: acme-a
workspaces:
- name: acme-a
  credentials:
    apiKey: "key-a"
- name: acme-b
  credentials:
    apiKey: "key-b"
tracking: false
`

func TestTokenPrintsOnlyTheToken(t *testing.T) {
	startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=bl_key-123"}})
	r := runHelper(t, "", "token")
	mustCode(t, r, exitOK)
	if r.stdout != "bl_key-123\n" {
		t.Errorf("stdout: want the token and a newline, got %q", r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("stderr must stay empty, got %q", r.stderr)
	}
}

func TestHeaderLines(t *testing.T) {
	startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=bl_key-123"}})
	r := runHelper(t, "", "header")
	mustCode(t, r, exitOK)
	want := "X-Blaxel-Authorization: Bearer bl_key-123\nX-Blaxel-Workspace: acme\n"
	if r.stdout != want || r.stderr != "" {
		t.Errorf("want stdout %q and no stderr, got %s", want, r)
	}
}

// A token with quotes, spaces and shell syntax survives eval in a real shell, and none of it runs.
func TestEnvEvaluatedByShell(t *testing.T) {
	key := `it's a "key" with $HOME, $(touch pwned) and ` + "`touch pwned` \\ end"
	td := startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=" + key}})

	r := runHelper(t, "", "env")
	mustCode(t, r, exitOK)
	want := "export BL_WORKSPACE=acme\nexport BL_API_KEY='it'\\''s a \"key\" with $HOME, $(touch pwned) and `touch pwned` \\ end'\n"
	if r.stdout != want {
		t.Errorf("env output:\nwant %q\n got %q", want, r.stdout)
	}

	dir := shortTempDir(t)
	r = runProc(t, proc{env: td.SocketEnv(), dir: dir}, "sh", "-c",
		`eval "$("$0" env)" || exit 9; printf '%s|%s' "$BL_WORKSPACE" "$BL_API_KEY"`, helperBin())
	mustCode(t, r, 0)
	if r.stdout != "acme|"+key {
		t.Errorf("after eval: want %q, got %q", "acme|"+key, r.stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Error("eval ran a command hidden in the token")
	}
}

// exec replaces the helper's process, so the real binary runs it: the child sees the token and
// the workspace, and its exit status comes back unchanged.
func TestExecPassesStatusAndVariables(t *testing.T) {
	td := startDaemon(t, daemonOpts{blConfig: twoWorkspaces})
	show := `printf '%s|%s' "$BL_WORKSPACE" "$BL_API_KEY"; exit 7`
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"default workspace", []string{"exec", "--", "sh", "-c", show}, "acme-a|key-a"},
		{"-w before exec", []string{"-w", "acme-b", "exec", "--", "sh", "-c", show}, "acme-b|key-b"},
		{"-w after exec", []string{"exec", "-w", "acme-b", "--", "sh", "-c", show}, "acme-b|key-b"},
		// Without "--", the command's own flags are its own: -w here is not a workspace.
		{"command flags untouched", []string{"exec", "sh", "-c", show, "-w", "acme-b"}, "acme-a|key-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runProc(t, proc{env: td.SocketEnv()}, helperBin(), tc.args...)
			mustCode(t, r, 7)
			if r.stdout != tc.want {
				t.Errorf("the child saw %q, want %q", r.stdout, tc.want)
			}
		})
	}
	t.Run("missing command", func(t *testing.T) {
		r := runProc(t, proc{env: td.SocketEnv()}, helperBin(), "exec", "--", "no-such-command-blauth")
		mustCode(t, r, 127)
		if r.stdout != "" || !strings.HasPrefix(r.stderr, "blauth: error: ") {
			t.Errorf("want a blauth: error and no output, got %s", r)
		}
	})
	t.Run("no command", func(t *testing.T) {
		mustFail(t, runHelper(t, "", "exec", "--"), exitUsage)
	})
}

func TestStatus(t *testing.T) {
	api := newAPI(t)
	cc := api.AddClient("sa-id", "sa-secret")
	td := startDaemon(t, daemonOpts{api: api, blConfig: twoWorkspaces, env: []string{"BL_WORKSPACE=acme-sa", "BL_CLIENT_CREDENTIALS=" + cc}})
	daemonToken(t, td.Socket, "acme-sa") // a cached token, so status shows its expiry

	t.Run("table", func(t *testing.T) {
		r := runHelper(t, "", "status")
		mustCode(t, r, exitOK)
		for _, want := range []string{"default workspace: acme-sa", "acme-a", "api_key", "bl_config:", "acme-sa", "client_credentials", "daemon_env:BL_CLIENT_CREDENTIALS"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("status does not show %q:\n%s", want, r.stdout)
			}
		}
		if strings.Contains(r.stdout, cc) || strings.Contains(r.stdout, "key-a") {
			t.Errorf("status shows a secret:\n%s", r.stdout)
		}
	})
	t.Run("json", func(t *testing.T) {
		r := runHelper(t, "", "status", "--json")
		mustCode(t, r, exitOK)
		var st struct {
			Default    string `json:"default_workspace"`
			Workspaces []struct {
				Workspace, Kind, Source string
				Expiry                  string `json:"expiry"`
			} `json:"workspaces"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
		}
		got := map[string]string{}
		for _, w := range st.Workspaces {
			got[w.Workspace] = w.Kind + " " + w.Source
			if w.Workspace == "acme-sa" && w.Expiry == "" {
				t.Error("acme-sa has a cached token but no expiry")
			}
		}
		want := map[string]string{
			"acme-a":  "api_key bl_config:" + filepath.Join(td.Home, ".blaxel", "config.yaml"),
			"acme-b":  "api_key bl_config:" + filepath.Join(td.Home, ".blaxel", "config.yaml"),
			"acme-sa": "client_credentials daemon_env:BL_CLIENT_CREDENTIALS",
		}
		for ws, w := range want {
			if got[ws] != w {
				t.Errorf("workspace %s: want %q, got %q", ws, w, got[ws])
			}
		}
		if st.Default != "acme-sa" {
			t.Errorf("default workspace: want acme-sa, got %q", st.Default)
		}
	})
	t.Run("unexpected argument", func(t *testing.T) {
		mustFail(t, runHelper(t, "", "status", "--yaml"), exitUsage)
	})
}

func TestWorkspaceSelection(t *testing.T) {
	startDaemon(t, daemonOpts{blConfig: twoWorkspaces})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bl context", []string{"token"}, "key-a"},
		{"-w", []string{"-w", "acme-b", "token"}, "key-b"},
		{"--workspace", []string{"--workspace", "acme-b", "token"}, "key-b"},
		{"--workspace=", []string{"--workspace=acme-b", "token"}, "key-b"},
		{"-w after the command", []string{"token", "-w", "acme-b"}, "key-b"},
		{"positional", []string{"token", "acme-b"}, "key-b"},
		{"same twice", []string{"-w", "acme-b", "token", "acme-b"}, "key-b"},
		{"header positional", []string{"header", "acme-b"}, "X-Blaxel-Authorization: Bearer key-b\nX-Blaxel-Workspace: acme-b"},
		{"env -w", []string{"env", "-w", "acme-b"}, "export BL_WORKSPACE=acme-b\nexport BL_API_KEY=key-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runHelper(t, "", tc.args...)
			mustCode(t, r, exitOK)
			if r.stdout != tc.want+"\n" {
				t.Errorf("want %q, got %q", tc.want+"\n", r.stdout)
			}
		})
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"conflicting workspaces", []string{"-w", "acme-a", "token", "acme-b"}},
		{"two positional workspaces", []string{"token", "acme-a", "acme-b"}},
		{"-w without a value", []string{"token", "-w"}},
		{"empty workspace", []string{"--workspace=", "token"}},
		{"unknown flag", []string{"token", "--json"}},
		{"no command", nil},
		{"unknown command", []string{"frobnicate"}},
		{"bad --min-ttl", []string{"--min-ttl", "soon", "token"}},
		{"login without a workspace", []string{"login", "--api-key"}},
		{"login with two workspaces", []string{"login", "acme-a", "acme-b"}},
		{"logout without a workspace", []string{"logout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustFail(t, runHelper(t, "", tc.args...), exitUsage)
		})
	}
}

func TestMinTTL(t *testing.T) {
	api := newAPI(t)
	cc := api.AddClient("sa-id", "sa-secret")
	startDaemon(t, daemonOpts{api: api, env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}})
	mustCode(t, runHelper(t, "", "--min-ttl", "60", "token"), exitOK)
	// Tokens live 2h: asking for 3h cannot be met.
	mustFail(t, runHelper(t, "", "--min-ttl=10800", "token"), exitUnavailable)
}

func TestExitCodes(t *testing.T) {
	t.Run("no daemon", func(t *testing.T) {
		t.Setenv(ipc.SocketEnv, filepath.Join(shortTempDir(t), "none", "blauthd.sock"))
		t.Setenv("BLAUTH_NO_SPAWN", "1")
		for _, cmd := range [][]string{{"token"}, {"header"}, {"env"}, {"status"}, {"ping"}, {"reload"}} {
			r := runHelper(t, "", cmd...)
			mustFail(t, r, exitUnreachable)
			if !strings.Contains(r.stderr, "BLAUTH_NO_SPAWN") {
				t.Errorf("%s: the hint should say how to let the helper start a daemon: %q", cmd, r.stderr)
			}
		}
	})
	t.Run("no workspace", func(t *testing.T) {
		startDaemon(t, daemonOpts{})
		mustFail(t, runHelper(t, "", "token"), exitNoCreds)
	})
	t.Run("no credentials", func(t *testing.T) {
		startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=k"}})
		mustFail(t, runHelper(t, "", "token", "nobody"), exitNoCreds)
	})
	t.Run("refused credential", func(t *testing.T) {
		api := newAPI(t)
		api.AddClient("sa-id", "right-secret")
		wrong := base64.StdEncoding.EncodeToString([]byte("sa-id:wrong-secret"))
		startDaemon(t, daemonOpts{api: api, env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + wrong}})
		r := runHelper(t, "", "token")
		mustFail(t, r, exitAuthFailed)
		if api.Count("client_credentials") != 1 {
			t.Errorf("want one exchange, the API saw %d", api.Count("client_credentials"))
		}
		// Refused for good: the next call does not ask the API again.
		mustFail(t, runHelper(t, "", "token"), exitAuthFailed)
		if api.Count("client_credentials") != 1 {
			t.Errorf("a refused credential was retried: the API saw %d exchanges", api.Count("client_credentials"))
		}
	})
	t.Run("endpoint down", func(t *testing.T) {
		api := newAPI(t)
		cc := api.AddClient("sa-id", "sa-secret")
		api.SetFault(blaxeltest.Fault503, -1)
		startDaemon(t, daemonOpts{api: api, env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}})
		mustFail(t, runHelper(t, "", "token"), exitUnavailable)
	})
}

// The caller's BL_* variables and its directory's .env are sent with each request and win over
// the daemon's own environment.
func TestCallerSourcesWin(t *testing.T) {
	td := startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=daemon-key"}})
	t.Run("daemon env", func(t *testing.T) {
		r := runHelper(t, "", "header")
		mustCode(t, r, exitOK)
		if r.stdout != "X-Blaxel-Authorization: Bearer daemon-key\nX-Blaxel-Workspace: acme\n" {
			t.Errorf("got %q", r.stdout)
		}
	})
	t.Run("caller API key", func(t *testing.T) {
		t.Setenv("BL_API_KEY", "caller-key")
		r := runHelper(t, "", "token")
		if r.stdout != "caller-key\n" {
			t.Errorf("want the caller's key, got %s", r)
		}
	})
	t.Run("caller workspace and key", func(t *testing.T) {
		t.Setenv("BL_WORKSPACE", "other")
		t.Setenv("BL_API_KEY", "other-key")
		r := runHelper(t, "", "header")
		if r.stdout != "X-Blaxel-Authorization: Bearer other-key\nX-Blaxel-Workspace: other\n" {
			t.Errorf("want the caller's workspace and key, got %s", r)
		}
	})
	t.Run("caller workspace only", func(t *testing.T) {
		// The daemon's key belongs to acme, the daemon's workspace: not to other.
		t.Setenv("BL_WORKSPACE", "other")
		mustFail(t, runHelper(t, "", "token"), exitNoCreds)
	})
	t.Run("dotenv", func(t *testing.T) {
		dir := shortTempDir(t)
		if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("# project\nBL_API_KEY='dotenv key'\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runProc(t, proc{env: td.SocketEnv(), dir: dir}, helperBin(), "token")
		if r.code != 0 || r.stdout != "dotenv key\n" {
			t.Errorf("want the .env key, got %s", r)
		}
		// .env ranks above the caller's environment.
		r = runProc(t, proc{env: append(td.SocketEnv(), "BL_API_KEY=caller-key"), dir: dir}, helperBin(), "token")
		if r.code != 0 || r.stdout != "dotenv key\n" {
			t.Errorf("want the .env key over the caller's, got %s", r)
		}
		// A directory without .env gets the caller's, then the daemon's.
		r = runProc(t, proc{env: append(td.SocketEnv(), "BL_API_KEY=caller-key"), dir: shortTempDir(t)}, helperBin(), "token")
		if r.code != 0 || r.stdout != "caller-key\n" {
			t.Errorf("want the caller's key, got %s", r)
		}
	})
}

func TestVersionAndHelp(t *testing.T) {
	r := runHelper(t, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "blauth-helper ") {
		t.Errorf("version: %s", r)
	}
	r = runHelper(t, "", "help")
	if r.code != 0 || !strings.Contains(r.stdout, "Usage:\n  blauth-helper") {
		t.Errorf("help: %s", r)
	}
}

func TestDaemonEnvDropsEveryBLVariable(t *testing.T) {
	in := []string{"PATH=/bin", "BL_API_KEY=k", "BL_CLIENT_CREDENTIALS=c", "BL_WORKSPACE=w", "BL_API_URL=http://127.0.0.1:1", "BL_ENV=dev", "BLAUTH_NO_SPAWN=1", "BLAUTH_SOCKET=/s", "HOME=/h"}
	got := strings.Join(daemonEnv(in), " ")
	if got != "PATH=/bin BLAUTH_SOCKET=/s HOME=/h" {
		t.Errorf("daemonEnv: got %q", got)
	}
}
