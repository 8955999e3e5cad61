package resolver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/memkeyring"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

type world struct {
	dir     string // the caller's directory
	blPath  string
	environ []string
	ring    *memkeyring.Keyring
}

func (w *world) writeDotenv(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(w.dir, ".env"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (w *world) writeBL(t *testing.T, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(w.blPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.blPath, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newWorld(t *testing.T) *world {
	base := t.TempDir()
	w := &world{dir: filepath.Join(base, "project"), blPath: filepath.Join(base, "home", ".blaxel", "config.yaml"), ring: memkeyring.New(nil)}
	if err := os.MkdirAll(w.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return w
}

// startWatcher runs a file watcher until the test ends, and then waits for it to stop.
func startWatcher(tb testing.TB, log zerolog.Logger, debounce time.Duration) *sources.Watcher {
	tb.Helper()
	wt, err := sources.NewWatcher(log, debounce)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- wt.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("watcher: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("the watcher did not stop within 30s of its context's end")
		}
	})
	return wt
}

func (w *world) resolver(t *testing.T, watch bool) *Resolver {
	cfg := Config{Environ: w.environ, BLConfigPath: w.blPath, Keyring: w.ring, Log: zerolog.New(zerolog.NewTestWriter(t))}
	if watch {
		cfg.Watcher = startWatcher(t, cfg.Log, 10*time.Millisecond)
	}
	r := New(context.Background(), cfg)
	t.Cleanup(r.Close)
	return r
}

const blFull = `context:
  workspace: ctx-ws
workspaces:
- name: acme
  credentials:
    apiKey: "bl_config_key"
- name: ctx-ws
  credentials:
    access_token: at
    refresh_token: rt
    expires_in: 7200
    client_credentials: "Y2M6c2VjcmV0"
  env: "dev"
tracking: false
`

// TestPrecedence walks DESIGN's order case by case: the caller's .env ▸ the caller's environment
// ▸ the daemon's environment ▸ the keyring ▸ the bl config.
func TestPrecedence(t *testing.T) {
	type setup struct {
		dotenv    string
		callerEnv map[string]string
		daemonEnv []string
		keyring   map[string]sources.KeyringSecret
		bl        string
		workspace string // asked for
	}
	tests := []struct {
		name       string
		s          setup
		wantWS     string
		wantKind   string
		wantSource string // kind of the winning source
		wantSecret string
		wantShadow int
	}{
		{"dotenv beats everything",
			setup{dotenv: "BL_WORKSPACE=acme\nBL_API_KEY=from_dotenv\n", callerEnv: map[string]string{"BL_WORKSPACE": "acme", "BL_API_KEY": "from_caller"},
				daemonEnv: []string{"BL_WORKSPACE=acme", "BL_API_KEY=from_daemon"}, keyring: map[string]sources.KeyringSecret{"acme": {Kind: ipc.KindAPIKey, Value: "from_ring"}}, bl: blFull},
			"acme", ipc.KindAPIKey, sources.SourceDotenv, "from_dotenv", 4},
		{"caller env beats daemon env",
			setup{callerEnv: map[string]string{"BL_WORKSPACE": "acme", "BL_API_KEY": "from_caller"}, daemonEnv: []string{"BL_WORKSPACE=acme", "BL_API_KEY=from_daemon"}},
			"acme", ipc.KindAPIKey, sources.SourceCallerEnv, "from_caller", 1},
		{"daemon env beats keyring",
			setup{daemonEnv: []string{"BL_WORKSPACE=acme", "BL_API_KEY=from_daemon"}, keyring: map[string]sources.KeyringSecret{"acme": {Kind: ipc.KindAPIKey, Value: "from_ring"}}},
			"acme", ipc.KindAPIKey, sources.SourceDaemonEnv, "from_daemon", 1},
		{"keyring beats bl config",
			setup{keyring: map[string]sources.KeyringSecret{"acme": {Kind: ipc.KindClientCredentials, Value: "cc_ring"}}, bl: blFull, workspace: "acme"},
			"acme", ipc.KindClientCredentials, sources.SourceKeyring, "cc_ring", 1},
		{"bl config alone",
			setup{bl: blFull, workspace: "acme"}, "acme", ipc.KindAPIKey, sources.SourceBLConfig, "bl_config_key", 0},
		// Within a bl config entry the SDKs' order holds: apiKey, then the login session, then
		// client credentials (docs/SOURCES.md explains why this is "Blaxel's own order").
		{"workspace from the bl context; its login session beats its client credentials",
			setup{bl: blFull}, "ctx-ws", ipc.KindLogin, sources.SourceBLConfig, "", 1},
		{"within one source the API key beats client credentials",
			setup{callerEnv: map[string]string{"BL_WORKSPACE": "acme", "BL_CLIENT_CREDENTIALS": "cc", "BL_API_KEY": "key"}},
			"acme", ipc.KindAPIKey, sources.SourceCallerEnv, "key", 1},
		{"a credential belongs to the BL_WORKSPACE beside it",
			setup{daemonEnv: []string{"BL_WORKSPACE=other", "BL_API_KEY=other_key"}, bl: blFull, workspace: "acme"},
			"acme", ipc.KindAPIKey, sources.SourceBLConfig, "bl_config_key", 0},
		{"a source without BL_WORKSPACE serves the chosen workspace",
			setup{dotenv: "BL_API_KEY=bare_key\n", bl: blFull}, "ctx-ws", ipc.KindAPIKey, sources.SourceDotenv, "bare_key", 2},
		{"the first BL_WORKSPACE in rank order chooses",
			setup{callerEnv: map[string]string{"BL_WORKSPACE": "from-caller"}, daemonEnv: []string{"BL_WORKSPACE=from-daemon", "BL_API_KEY=dk"}, keyring: map[string]sources.KeyringSecret{"from-caller": {Kind: ipc.KindAPIKey, Value: "rk"}}},
			"from-caller", ipc.KindAPIKey, sources.SourceKeyring, "rk", 0},
		{"an explicit workspace beats every BL_WORKSPACE",
			setup{dotenv: "BL_WORKSPACE=acme\nBL_API_KEY=k\n", keyring: map[string]sources.KeyringSecret{"asked": {Kind: ipc.KindAPIKey, Value: "asked_key"}}, workspace: "asked"},
			"asked", ipc.KindAPIKey, sources.SourceKeyring, "asked_key", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			if tt.s.dotenv != "" {
				w.writeDotenv(t, tt.s.dotenv)
			}
			if tt.s.bl != "" {
				w.writeBL(t, tt.s.bl)
			}
			w.environ = tt.s.daemonEnv
			for k, v := range tt.s.keyring {
				w.ring.Put(k, v)
			}
			r := w.resolver(t, false)
			res, err := r.Resolve(Request{Workspace: tt.s.workspace, Dir: w.dir, Env: tt.s.callerEnv})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			c := res.Credential
			secret := c.APIKey + c.ClientCredentials
			if res.Workspace != tt.wantWS || c.Kind != tt.wantKind || c.Source.Kind != tt.wantSource || secret != tt.wantSecret {
				t.Fatalf("got %s/%s from %s (%q), want %s/%s from %s (%q)", res.Workspace, c.Kind, c.Source.Kind, secret, tt.wantWS, tt.wantKind, tt.wantSource, tt.wantSecret)
			}
			if len(res.Shadowed) != tt.wantShadow {
				var s []string
				for _, x := range res.Shadowed {
					s = append(s, x.String())
				}
				t.Fatalf("shadowed %d (%v), want %d", len(res.Shadowed), s, tt.wantShadow)
			}
		})
	}
}

func TestBaseURLRules(t *testing.T) {
	tests := []struct {
		name                string
		daemonEnv           []string
		callerEnv           map[string]string
		workspace, wantBase string
		wantSource          string
	}{
		{"prod by default", []string{"BL_WORKSPACE=acme", "BL_API_KEY=k"}, nil, "", sources.DefaultBaseURL, sources.SourceDaemonEnv},
		{"workspace env from the config", nil, nil, "ctx-ws", "https://api.blaxel.dev/v0", sources.SourceBLConfig},
		{"BL_ENV beats the workspace env", []string{"BL_ENV=local"}, nil, "ctx-ws", "http://localhost:8080/v0", sources.SourceBLConfig},
		{"BL_API_URL beats BL_ENV", []string{"BL_ENV=local", "BL_API_URL=http://127.0.0.1:9/v0/"}, nil, "ctx-ws", "http://127.0.0.1:9/v0", sources.SourceBLConfig},
		{"a caller's BL_API_URL applies to its own credential", nil, map[string]string{"BL_API_URL": "http://127.0.0.1:7/v0", "BL_CLIENT_CREDENTIALS": "cc"}, "acme", "http://127.0.0.1:7/v0", sources.SourceCallerEnv},
		{"a caller's BL_API_URL never redirects a daemon-held secret", nil, map[string]string{"BL_API_URL": "http://evil.example/v0"}, "ctx-ws", "https://api.blaxel.dev/v0", sources.SourceBLConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			w.writeBL(t, blFull)
			w.environ = tt.daemonEnv
			res, err := w.resolver(t, false).Resolve(Request{Workspace: tt.workspace, Env: tt.callerEnv})
			if err != nil {
				t.Fatal(err)
			}
			if res.Credential.BaseURL != tt.wantBase || res.Credential.Source.Kind != tt.wantSource {
				t.Fatalf("base %q from %s, want %q from %s", res.Credential.BaseURL, res.Credential.Source.Kind, tt.wantBase, tt.wantSource)
			}
		})
	}
}

func TestNoWorkspaceNoCredentials(t *testing.T) {
	w := newWorld(t)
	r := w.resolver(t, false)
	if _, err := r.Resolve(Request{Dir: w.dir}); !errors.Is(err, ErrNoWorkspace) {
		t.Fatalf("err = %v, want ErrNoWorkspace", err)
	}
	if _, err := r.Resolve(Request{Workspace: "x"}); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("err = %v, want ErrNoCredentials", err)
	}
}

func TestBrokenDotenvLineReportedAndTheRestCounts(t *testing.T) {
	w := newWorld(t)
	w.writeDotenv(t, "BL_WORKSPACE=acme\nthis line is broken\nBL_API_KEY=still_counts\n")
	res, err := w.resolver(t, false).Resolve(Request{Dir: w.dir})
	if err != nil || res.Credential.APIKey != "still_counts" {
		t.Fatalf("got %v %v", res, err)
	}
	if len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Error, "line 2") || res.Errors[0].Source.Where != filepath.Join(w.dir, ".env") {
		t.Fatalf("errors = %+v, want one naming the file and line 2", res.Errors)
	}
}

func TestTornBLConfigKeepsTheLastGoodView(t *testing.T) {
	w := newWorld(t)
	w.writeBL(t, blFull)
	r := w.resolver(t, false)
	// bl caught mid-write, inside a quoted value: not even valid YAML.
	w.writeBL(t, blFull[:strings.Index(blFull, "bl_config_key")+6])
	r.Reload(context.Background())
	res, err := r.Resolve(Request{Workspace: "acme"})
	if err != nil || res.Credential.APIKey != "bl_config_key" {
		t.Fatalf("after a torn write: %v %v; want the last good view", res, err)
	}
	if len(res.Errors) != 0 {
		t.Fatalf("a daemon-held source's error is among the request's own: %+v", res.Errors)
	}
	errs := r.SourceErrors()
	if len(errs) != 1 || errs[0].Source != (sources.Provenance{Kind: sources.SourceBLConfig, Where: w.blPath}) {
		t.Fatalf("the torn file is not reported once: %+v", errs)
	}
	for _, e := range errs {
		if strings.Contains(e.Error, "bl_con") || strings.Contains(e.Error, "Y2M6") {
			t.Fatalf("a source error quotes a secret: %s", e.Error)
		}
	}
	// bl finishes writing: picked up and the error clears.
	w.writeBL(t, strings.Replace(blFull, "bl_config_key", "new_key", 1))
	r.Reload(context.Background())
	res, _ = r.Resolve(Request{Workspace: "acme"})
	if res.Credential.APIKey != "new_key" || len(r.SourceErrors()) != 0 {
		t.Fatalf("after the write completed: %q, errors %v", res.Credential.APIKey, r.SourceErrors())
	}
}

func TestKeyringUnavailableLeavesOtherSourcesWorking(t *testing.T) {
	w := newWorld(t)
	w.ring.SetErr(fmt.Errorf("%w: no Secret Service", sources.ErrKeyringUnavailable))
	w.writeBL(t, blFull)
	r := w.resolver(t, false)
	for _, ws := range []string{"acme", "ctx-ws"} {
		res, err := r.Resolve(Request{Workspace: ws})
		if err != nil || res.Credential.Source.Kind != sources.SourceBLConfig {
			t.Fatalf("%s: got %v, %v", ws, res, err)
		}
		if len(res.Errors) != 0 {
			t.Fatalf("%s: the keyring's problem is among the request's own: %+v", ws, res.Errors)
		}
	}
	if errs := r.SourceErrors(); len(errs) != 1 || errs[0].Source.Kind != sources.SourceKeyring || !strings.Contains(errs[0].Error, "no Secret Service") {
		t.Fatalf("the keyring problem is not reported once: %+v", errs)
	}
}

func TestDotenvEditsAreSeenAndWatchesAreBounded(t *testing.T) {
	w := newWorld(t)
	w.writeDotenv(t, "BL_WORKSPACE=acme\nBL_API_KEY=one\n")
	cfg := Config{Log: zerolog.New(zerolog.NewTestWriter(t)), MaxDotenvDirs: 3}
	wt := startWatcher(t, cfg.Log, 10*time.Millisecond)
	cfg.Watcher = wt
	r := New(context.Background(), cfg)
	defer r.Close()
	if res, _ := r.Resolve(Request{Dir: w.dir}); res.Credential.APIKey != "one" {
		t.Fatal("first read")
	}
	changed := r.Changed()
	w.writeDotenv(t, "BL_WORKSPACE=acme\nBL_API_KEY=two\n")
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("the edit was not noticed")
	}
	if res, _ := r.Resolve(Request{Dir: w.dir}); res.Credential.APIKey != "two" {
		t.Fatal("the edit was not served")
	}
	for i := 0; i < 10; i++ {
		d := filepath.Join(t.TempDir(), fmt.Sprint(i))
		_ = os.Mkdir(d, 0o700)
		_ = os.WriteFile(filepath.Join(d, ".env"), []byte("BL_API_KEY=x\n"), 0o600)
		_, _ = r.Resolve(Request{Dir: d, Workspace: "acme"})
		if n := r.WatchedDotenvs(); n > 3 {
			t.Fatalf("%d .env files watched, bound is 3", n)
		}
	}
	if wt.WatchedDirs() > 4 { // 3 .env dirs (+ nothing else in this resolver)
		t.Fatalf("%d directories watched after eviction", wt.WatchedDirs())
	}
}

func TestEmptiedBLConfigIsBelievedAfterRetries(t *testing.T) {
	w := newWorld(t)
	w.writeBL(t, blFull)
	r := w.resolver(t, false)
	w.writeBL(t, "")
	r.Reload(context.Background())
	if res, err := r.Resolve(Request{Workspace: "acme"}); err != nil || res.Credential.APIKey != "bl_config_key" {
		t.Fatal("a just-emptied file (bl truncates before writing) must keep the last good view")
	}
	testkit.WaitFor(t, 30*time.Second, "a file that stays empty to be believed", func() bool {
		_, err := r.Resolve(Request{Workspace: "acme"})
		return errors.Is(err, ErrNoCredentials)
	})
}
