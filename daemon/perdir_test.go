package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// Three API-key workspaces; the bl context names acme.
const threeWorkspaces = `context:
  workspace: acme
workspaces:
- name: acme
  credentials:
    apiKey: "key-acme"
- name: beta
  credentials:
    apiKey: "key-beta"
- name: gamma
  credentials:
    apiKey: "key-gamma"
tracking: false
`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	// Written whole by rename, as editors save, so that a watcher never sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// get asks td for a token as a caller in dir, with kv more keys.
func getIn(t *testing.T, td *daemontest.Daemon, dir string, kv ...string) *ipc.Token {
	t.Helper()
	return td.Token(t, append([]string{ipc.KeyDir, dir}, kv...)...)
}

// A project directory with a blaxel.toml gets its workspace's token, and a directory a route
// of blauth's config file matches gets the route's; each answer and the status say what chose
// the workspace. -w and the caller's BL_WORKSPACE still win over both.
func TestBlaxelTOMLAndRoutesChooseTheWorkspace(t *testing.T) {
	root := t.TempDir()
	project := filepath.Join(root, "project")
	writeFile(t, filepath.Join(project, "blaxel.toml"), "name = \"my-agent\"\nworkspace = \"beta\"\n\n[runtime]\nmemory = 4096\n")
	config := filepath.Join(root, "config", "blauth", "config.yaml")
	writeFile(t, config, "routes:\n- dir: "+root+"/work/**\n  workspace: acme\n- dir: "+root+"/work/gamma/**\n  workspace: gamma\n")
	routed := filepath.Join(root, "work", "gamma", "api")
	if err := os.MkdirAll(routed, 0o700); err != nil {
		t.Fatal(err)
	}
	td := daemontest.Start(t, daemontest.Options{BLConfig: threeWorkspaces, Mutate: func(c *daemon.Config) {
		c.ConfigFile = config
	}})

	tok := getIn(t, td, project)
	if tok.Workspace != "beta" || tok.Token != "key-beta" || tok.WorkspaceSource != "blaxel_toml:"+filepath.Join(project, "blaxel.toml")+"#workspace" {
		t.Errorf("in the project: %s %q chosen by %q; want beta's key, chosen by its blaxel.toml", tok.Workspace, tok.Token, tok.WorkspaceSource)
	}
	tok = getIn(t, td, routed)
	wantRoute := "route:" + root + "/work/gamma/** (" + config + " line 4)"
	if tok.Workspace != "gamma" || tok.Token != "key-gamma" || tok.WorkspaceSource != wantRoute {
		t.Errorf("in the routed directory: %s %q chosen by %q; want gamma's key, chosen by %q", tok.Workspace, tok.Token, tok.WorkspaceSource, wantRoute)
	}
	if st := status(t, td, ipc.KeyDir, routed); st.Default != "gamma" || st.DefaultSource != wantRoute {
		t.Errorf("status in the routed directory: default %q chosen by %q; want gamma, %q", st.Default, st.DefaultSource, wantRoute)
	}
	if tok = getIn(t, td, root); tok.Workspace != "acme" || tok.WorkspaceSource != "bl_config:"+filepath.Join(td.Home, ".blaxel", "config.yaml")+"#context.workspace" {
		t.Errorf("elsewhere: %s chosen by %q; want the bl context's acme", tok.Workspace, tok.WorkspaceSource)
	}
	if tok = getIn(t, td, project, ipc.KeyWorkspace, "gamma"); tok.Token != "key-gamma" || tok.WorkspaceSource != "request:workspace" {
		t.Errorf("-w gamma in the project: %q chosen by %q; want gamma's key, chosen by the request", tok.Token, tok.WorkspaceSource)
	}
	if tok = getIn(t, td, routed, "env."+"BL_WORKSPACE", "beta"); tok.Token != "key-beta" || tok.WorkspaceSource != "caller_env:BL_WORKSPACE" {
		t.Errorf("BL_WORKSPACE=beta in the routed directory: %q chosen by %q; want beta's key", tok.Token, tok.WorkspaceSource)
	}

	// The routes follow the file: a new route is used without a restart.
	writeFile(t, config, "routes:\n- dir: "+root+"/work/gamma/api\n  workspace: beta\n")
	testkit.WaitFor(t, 30*time.Second, "the edited route", func() bool { return getIn(t, td, routed).Token == "key-beta" })

	// A pattern that does not parse keeps the routes read before, and status names the line.
	writeFile(t, config, "# edited\nroutes:\n- dir: "+root+"/work/[gamma\n  workspace: gamma\n")
	testkit.WaitFor(t, 30*time.Second, "the broken config file in status", func() bool {
		for _, e := range status(t, td).SourceErrors {
			if e.Source.Kind == "blauth_config" && strings.Contains(e.Error, config+" line 3") && strings.Contains(e.Error, "not a valid pattern") {
				return true
			}
		}
		return false
	})
	if tok = getIn(t, td, routed); tok.Token != "key-beta" {
		t.Errorf("after a broken edit: %q; want the last good route's beta", tok.Token)
	}
}

// blaxel.toml's [env] counts as the TypeScript SDK counts it: below the .env, above the
// process environment.
func TestBlaxelTOMLEnvRanksBetweenDotenvAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	toml := filepath.Join(dir, "blaxel.toml")
	writeFile(t, toml, "[env]\nBL_WORKSPACE = \"beta\"\nBL_API_KEY = \"key-from-toml\"\n")
	td := daemontest.Start(t, daemontest.Options{BLConfig: threeWorkspaces})

	tok := getIn(t, td, dir, "env.BL_API_KEY", "key-from-env")
	if tok.Workspace != "beta" || tok.Token != "key-from-toml" || tok.Source != "blaxel_toml:"+toml+"#BL_API_KEY" {
		t.Errorf("%s %q from %q; want the [env] key over the environment's", tok.Workspace, tok.Token, tok.Source)
	}
	if tok.WorkspaceSource != "blaxel_toml:"+toml+"#BL_WORKSPACE" {
		t.Errorf("workspace chosen by %q; want the [env] table", tok.WorkspaceSource)
	}
	writeFile(t, filepath.Join(dir, ".env"), "BL_API_KEY=key-from-dotenv\n")
	testkit.WaitFor(t, 30*time.Second, "the .env over the [env] table", func() bool {
		tok = getIn(t, td, dir, "env.BL_API_KEY", "key-from-env")
		return tok.Token == "key-from-dotenv"
	})
	if tok.Workspace != "beta" {
		t.Errorf("workspace %s; want beta, still from the [env] table", tok.Workspace)
	}
}

// A blaxel.toml that does not parse loses nothing: the .env beside it still serves, and status
// names the file and the line.
func TestBrokenBlaxelTOMLLosesNothing(t *testing.T) {
	dir := t.TempDir()
	toml := filepath.Join(dir, "blaxel.toml")
	writeFile(t, toml, "name = \"agent\"\n\nworkspace = beta\n")
	writeFile(t, filepath.Join(dir, ".env"), "BL_WORKSPACE=gamma\nBL_API_KEY=key-from-dotenv\n")
	td := daemontest.Start(t, daemontest.Options{BLConfig: threeWorkspaces})

	if tok := getIn(t, td, dir); tok.Workspace != "gamma" || tok.Token != "key-from-dotenv" {
		t.Errorf("%s %q; want the .env's", tok.Workspace, tok.Token)
	}
	st := status(t, td, ipc.KeyDir, dir)
	found := false
	for _, e := range st.SourceErrors {
		if e.Source.Kind == "blaxel_toml" && e.Source.Where == toml && strings.HasPrefix(e.Error, "line 3: ") {
			found = true
		}
	}
	if !found {
		t.Errorf("status source errors %+v; want %s line 3", st.SourceErrors, toml)
	}
	if st.Default != "gamma" {
		t.Errorf("default workspace %q; want the .env's gamma", st.Default)
	}
}

// A connection that sends the same get again and again (a long-running SDK process) still sees
// every change of the caller's .env: an edit of the watched file shows within the watcher's
// delay, and a .env dropped from the cache (here evicted by 64 other directories) and edited
// while nothing watched it shows at the very next request.
func TestRepeatedGetOnOneConnectionSeesEveryDotenvChange(t *testing.T) {
	base := t.TempDir()
	proj := filepath.Join(base, "proj")
	dotenv := filepath.Join(proj, ".env")
	writeFile(t, dotenv, "BL_WORKSPACE=acme\nBL_API_KEY=key-1\n")
	td := daemontest.Start(t, daemontest.Options{})
	key := repeatedGet(t, td, ipc.KeyDir, proj, "env.BL_ENV", "prod")
	for range 100 {
		if k := key(); k != "key-1" {
			t.Fatalf("served %q, want key-1", k)
		}
	}

	writeFile(t, dotenv, "BL_WORKSPACE=acme\nBL_API_KEY=key-2\n")
	testkit.WaitFor(t, 30*time.Second, "the edited .env on the same connection", func() bool { return key() == "key-2" })

	for i := range 64 {
		other := filepath.Join(base, fmt.Sprintf("other-%02d", i))
		writeFile(t, filepath.Join(other, ".env"), "BL_WORKSPACE=acme\nBL_API_KEY=key-other\n")
		if tok := getIn(t, td, other); tok.Token != "key-other" {
			t.Fatalf("%s: served %q", other, tok.Token)
		}
	}
	// proj's .env is no longer cached nor watched: an edit now sends no event.
	writeFile(t, dotenv, "BL_WORKSPACE=acme\nBL_API_KEY=key-3\n")
	if k := key(); k != "key-3" {
		t.Errorf("after its .env left the cache and was edited, the connection was served %q, want key-3", k)
	}
}

// The same for the bl config, which no request names: a connection asking again and again for
// the context's workspace is served the key an edit of the file puts there.
func TestRepeatedGetOnOneConnectionSeesABLConfigEdit(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{BLConfig: threeWorkspaces})
	key := repeatedGet(t, td)
	for range 100 {
		if k := key(); k != "key-acme" {
			t.Fatalf("served %q, want key-acme", k)
		}
	}
	writeFile(t, filepath.Join(td.Home, ".blaxel", "config.yaml"), strings.Replace(threeWorkspaces, `"key-acme"`, `"key-acme-2"`, 1))
	testkit.WaitFor(t, 30*time.Second, "the edited bl config on the same connection", func() bool { return key() == "key-acme-2" })
}

// repeatedGet opens one connection to td, closed when the test ends, and returns a function that
// sends the same get (action=get and kv) on it and returns the token served.
func repeatedGet(t *testing.T, td *daemontest.Daemon, kv ...string) func() string {
	t.Helper()
	c, err := ipc.Dial(td.Socket, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := append([]string{ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet}, kv...)
	return func() string {
		t.Helper()
		resp, err := c.Do(ipc.NewMessage(req...))
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		return resp.Value(ipc.KeyToken)
	}
}
