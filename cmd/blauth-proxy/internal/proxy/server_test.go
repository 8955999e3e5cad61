package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

func TestSecret(t *testing.T) {
	a, b := NewSecret(), NewSecret()
	raw, err := base64.RawURLEncoding.DecodeString(a.Value())
	if err != nil || len(raw) != 32 || len(a.Value()) != 43 {
		t.Fatalf("a secret is %d characters, %d bytes decoded (%v); want 43 characters of base64url for 32 bytes", len(a.Value()), len(raw), err)
	}
	if a.Value() == b.Value() {
		t.Fatal("two secrets are equal")
	}
	if a.String() == a.Value() || strings.Contains(a.String(), a.Value()) {
		t.Error("String shows the secret")
	}
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{"Bearer " + a.Value(), true},
		{"bearer " + a.Value(), true},
		{"BEARER " + a.Value() + " ", true},
		{a.Value(), false},
		{"Bearer " + b.Value(), false},
		{"Bearer " + a.Value()[:42], false},
		{"Bearer " + a.Value() + "x", false},
		{"Basic " + a.Value(), false},
		{"Bearer ", false},
		{"", false},
	} {
		if got := a.matches(tc.value); got != tc.want {
			t.Errorf("matches(%q) = %v, want %v", strings.ReplaceAll(tc.value, a.Value(), "<secret>"), got, tc.want)
		}
	}
	if (Secret{}).matches("Bearer ") {
		t.Error("the zero Secret matches an empty bearer")
	}
}

func TestRunBase(t *testing.T) {
	for _, tc := range []struct {
		api, run, want, err string
	}{
		{"https://api.blaxel.ai/v0", "", "https://run.blaxel.ai", ""},
		{"https://api.blaxel.ai/v0/", "", "https://run.blaxel.ai", ""},
		{"https://api.blaxel.dev/v0", "", "https://run.blaxel.dev", ""},
		{"http://127.0.0.1:9/v0", "", "", "set BL_RUN_URL"},
		{"http://localhost:8080/v0", "", "", "set BL_RUN_URL"},
		{"https://user:secret-pw@api.example.test/v0?key=secret-q", "", "", "https://api.example.test/v0: set BL_RUN_URL"},
		{"https://user:secret-pw@api.example.test:port/v0", "", "", "(a URL that does not parse, not quoted here: it may hold a password): set BL_RUN_URL"},
		{"https://api.blaxel.ai/v0", "https://run.example.test/", "https://run.example.test", ""},
		{"http://127.0.0.1:9/v0", "http://127.0.0.1:10", "http://127.0.0.1:10", ""},
		{"http://127.0.0.1:9/v0", "http://[::1]:10", "http://[::1]:10", ""},
		{"https://api.blaxel.ai/v0", "http://run.example.test", "", "plain http"},
		{"https://api.blaxel.ai/v0", "https://run.example.test/?a=1", "", "query"},
		{"https://api.blaxel.ai/v0", "https://user:secret-pw@run.example.test", "", "user info"},
		{"https://api.blaxel.ai/v0", "https://run.example.test/?key=secret-q", "", "query"},
		{"https://api.blaxel.ai/v0", "run.example.test", "", "absolute"},
		{"https://api.blaxel.ai/v0", "user:secret-pw@run.example.test", "", "absolute"},
		{"https://api.blaxel.ai/v0", "https://user:secret-pw@run.example.test:port/", "", "not a URL"},
	} {
		got, err := RunBase(tc.api, tc.run)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("RunBase(%q, %q) = %q, %v; want %q and an error saying %q", tc.api, tc.run, got, err, tc.want, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("RunBase(%q, %q): the error %q repeats a secret of the URL", tc.api, tc.run, err)
		}
	}
}

// recorder is an upstream that records what reached it and echoes nothing secret back.
type recorder struct {
	*httptest.Server
	hits    atomic.Int64
	mu      sync.Mutex
	last    *http.Request
	handler http.HandlerFunc // optional, after recording
}

func newRecorder(t *testing.T, h http.HandlerFunc) *recorder {
	r := &recorder{handler: h}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		r.mu.Lock()
		r.last = req.Clone(context.Background())
		r.mu.Unlock()
		if r.handler != nil {
			r.handler(w, req)
			return
		}
		_, _ = io.WriteString(w, "upstream ok\n")
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) lastRequest() *http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// newProxy serves a proxy for e's tokens with run base runURL, on a real loopback listener.
func newProxy(t *testing.T, e *testEnv, runURL string) (*served, Secret) {
	t.Helper()
	secret := NewSecret()
	return startProxy(t, Config{Tokens: e.tokens, Secret: secret, RunURL: runURL}, nil), secret
}

func do(t *testing.T, method, url string, headers map[string][]string, body io.Reader) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestServerRefusesWithoutTheSecret(t *testing.T) {
	e := newTestEnv(t)
	up := newRecorder(t, nil)
	hs, secret := newProxy(t, e, up.URL)
	other := NewSecret().Value()
	good := "Bearer " + secret.Value()
	for _, tc := range []struct {
		name    string
		headers map[string][]string
		want    string
	}{
		{"no credential", nil, "no credential"},
		{"another secret", map[string][]string{"X-Blaxel-Authorization": {"Bearer " + other}}, "X-Blaxel-Authorization does not carry this run's secret"},
		{"the secret without Bearer", map[string][]string{"Authorization": {secret.Value()}}, "Authorization does not carry"},
		{"Basic", map[string][]string{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("a:b"))}}, "Authorization does not carry"},
		{"the secret twice", map[string][]string{"Authorization": {good, good}}, "Authorization is sent more than once"},
		{"the secret beside another", map[string][]string{"X-Blaxel-Authorization": {good}, "Authorization": {"Bearer " + other}}, "Authorization does not carry"},
		{"the secret in another header", map[string][]string{"X-Api-Key": {secret.Value()}}, "no credential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/api/models", "/run/acme/agents/a", "/elsewhere"} {
				status, body, h := do(t, http.MethodGet, hs.URL+path, tc.headers, nil)
				if status != http.StatusUnauthorized || !strings.Contains(body, tc.want) {
					t.Errorf("%s: %d %q, want 401 saying %q", path, status, body, tc.want)
				}
				if h.Get("WWW-Authenticate") == "" {
					t.Errorf("%s: 401 without WWW-Authenticate", path)
				}
				if strings.Contains(body, other) || strings.Contains(body, secret.Value()) {
					t.Errorf("%s: the refusal echoes a credential", path)
				}
			}
		})
	}
	if n := up.hits.Load(); n != 0 {
		t.Errorf("the upstream got %d refused requests", n)
	}
	if calls := e.api.APICalls(); calls.OK+calls.Rejected != 0 {
		t.Errorf("the API got %d refused requests", calls.OK+calls.Rejected)
	}
}

func TestServerReplacesTheSecretInTheFormsUsed(t *testing.T) {
	e := newTestEnv(t)
	up := newRecorder(t, nil)
	hs, secret := newProxy(t, e, up.URL+"/base")
	bearer := "Bearer " + secret.Value()
	for _, tc := range []struct {
		name          string
		forms         []string
		wantX, wantAu bool
	}{
		{"X-Blaxel-Authorization", []string{"X-Blaxel-Authorization"}, true, false},
		{"Authorization", []string{"Authorization"}, false, true},
		{"both", []string{"Authorization", "X-Blaxel-Authorization"}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string][]string{"X-Blaxel-Workspace": {"someone-else"}, "X-Forwarded-For": {"10.1.2.3"}, "Blaxel-Version": {"2026-04-28"}}
			for _, f := range tc.forms {
				h[f] = []string{bearer}
			}
			status, body, _ := do(t, http.MethodGet, hs.URL+"/run/acme/functions/a%2Fb/mcp?x=1&y=%20", h, nil)
			if status != http.StatusOK || body != "upstream ok\n" {
				t.Fatalf("%d %q", status, body)
			}
			r := up.lastRequest()
			if got := r.URL.EscapedPath(); got != "/base/acme/functions/a%2Fb/mcp" || r.URL.RawQuery != "x=1&y=%20" {
				t.Errorf("the upstream got %s?%s", got, r.URL.RawQuery)
			}
			for _, f := range []struct {
				name string
				want bool
			}{{"X-Blaxel-Authorization", tc.wantX}, {"Authorization", tc.wantAu}} {
				vals := r.Header.Values(f.name)
				if f.want && (len(vals) != 1 || vals[0] != "Bearer "+testKey) {
					t.Errorf("%s: %d values, want the daemon's token once", f.name, len(vals))
				}
				if !f.want && len(vals) != 0 {
					t.Errorf("%s was added, though the client did not send it", f.name)
				}
			}
			if ws := r.Header.Values("X-Blaxel-Workspace"); len(ws) != 1 || ws[0] != "acme" {
				t.Errorf("X-Blaxel-Workspace: %q, want the daemon's workspace, acme", ws)
			}
			if r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Blaxel-Version") != "2026-04-28" {
				t.Errorf("X-Forwarded-For %q reached the upstream or Blaxel-Version %q did not", r.Header.Get("X-Forwarded-For"), r.Header.Get("Blaxel-Version"))
			}
			for k, vs := range r.Header {
				for _, v := range vs {
					if strings.Contains(v, secret.Value()) {
						t.Errorf("the upstream got the secret in %s", k)
					}
				}
			}
		})
	}
	// The API prefix goes to the daemon's api_url: the fake API checks the token and workspace.
	status, body, _ := do(t, http.MethodGet, hs.URL+"/api/models", map[string][]string{"X-Blaxel-Authorization": {bearer}}, nil)
	if status != http.StatusOK || !strings.Contains(body, "sandbox-openai") {
		t.Errorf("GET /api/models: %d %q", status, body)
	}
}

func TestRewriteLocation(t *testing.T) {
	sent, _ := url.Parse("https://api.example.test/v0/models?x=1")
	for _, tc := range []struct{ loc, want string }{
		{"/v0/", "/api/"},
		{"/v0", "/api"},
		{"https://api.example.test/v0/agents/a?b=2", "/api/agents/a?b=2"},
		{"agents", "/api/agents"},
		{"/v00/x", "/v00/x"},
		{"/other", "/other"},
		{"https://elsewhere.test/v0/x", "https://elsewhere.test/v0/x"},
		{"http://api.example.test/v0/x", "http://api.example.test/v0/x"},
	} {
		if got := rewriteLocation(tc.loc, sent, "https://api.example.test/v0", "/api"); got != tc.want {
			t.Errorf("rewriteLocation(%q) = %q, want %q", tc.loc, got, tc.want)
		}
	}
}

func TestServerRoutes(t *testing.T) {
	e := newTestEnv(t)
	hs, secret := newProxy(t, e, "") // no BL_RUN_URL, and the API base is the fake's
	auth := map[string][]string{"Authorization": {"Bearer " + secret.Value()}}
	for _, tc := range []struct {
		path   string
		status int
		want   string
	}{
		{"/apix/models", http.StatusNotFound, "forwards /api/… to the Blaxel API"},
		{"/", http.StatusNotFound, "no such path"},
		{"/api/../run/x", http.StatusBadRequest, ". or .. segments"},
		{"/api/%2e%2e/x", http.StatusBadRequest, ". or .. segments"},
		{"/run/acme/agents/a", http.StatusBadGateway, "set BL_RUN_URL"},
		// The fake API redirects /v0 to /v0/: the client follows it to the proxy's /api/, and
		// gets a bare list (the request names no Blaxel-Version).
		{"/api", http.StatusOK, "[]\n"},
	} {
		req, _ := http.NewRequest(http.MethodGet, hs.URL, nil)
		req.URL.Opaque = tc.path // sent as is, dot segments included
		req.Header = auth
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s: %d %q, want %d saying %q", tc.path, resp.StatusCode, body, tc.status, tc.want)
		}
	}
}

// Streaming both ways: the upstream reads the first part of a request body before the client
// sends the rest, and the client reads the first event of the answer before the upstream
// sends the rest. Buffering on either side would block the test until its bound. It holds for
// an event stream and for any answer of unknown length (logs, a process's output).
func TestServerStreamsBothWays(t *testing.T) {
	e := newTestEnv(t)
	for _, ct := range []string{"text/event-stream", "text/plain; charset=utf-8"} {
		t.Run(ct, func(t *testing.T) { streamsBothWays(t, e, ct) })
	}
}

func streamsBothWays(t *testing.T, e *testEnv, contentType string) {
	gotPart, release := make(chan string, 1), make(chan struct{})
	up := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		br := bufio.NewReader(r.Body)
		line, _ := br.ReadString('\n')
		gotPart <- line
		w.Header().Set("Content-Type", contentType)
		_, _ = io.WriteString(w, "data: one\n\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-time.After(20 * time.Second):
			return
		}
		rest, _ := io.ReadAll(br)
		_, _ = io.WriteString(w, "data: "+strings.TrimSpace(string(rest))+"\n\n")
	})
	hs, secret := newProxy(t, e, up.URL)
	pr, pw := io.Pipe()
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(func() { free(); pw.Close() }) // a failing test must not hold the servers open
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/run/acme/sandboxes/box/process", pr)
	req.Header.Set("X-Blaxel-Authorization", "Bearer "+secret.Value())
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		done <- result{resp, err}
	}()
	if _, err := io.WriteString(pw, "first part\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-gotPart:
		if line != "first part\n" {
			t.Fatalf("the upstream read %q", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the upstream did not get the first part of the body while the client was still sending: the request is buffered")
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("no answer headers while the upstream holds its stream open")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.resp.Body.Close()
	events := make(chan event, 4)
	go func() {
		_ = readEvents(r.resp.Body, 1<<20, func(ev event) error { events <- ev; return nil })
		close(events)
	}()
	select {
	case ev := <-events:
		if string(ev.data) != "one" {
			t.Fatalf("first event %q", ev.data)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the first event did not arrive while the upstream holds the rest: the answer is buffered")
	}
	free()
	_, _ = io.WriteString(pw, "second part\n")
	pw.Close()
	if ev, ok := <-events; !ok || string(ev.data) != "second part" {
		t.Errorf("second event %q (%v)", ev.data, ok)
	}
}

// Without a credential for the selection the proxy answers 503 at once, with the daemon's
// message and hint, and never forwards.
func TestServerWithoutTokenAnswers503(t *testing.T) {
	socket := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=acme"}}).Socket
	e := &testEnv{socket: socket, tokens: followTokens(t, Selection{Socket: socket})}
	up := newRecorder(t, nil)
	hs, secret := newProxy(t, e, up.URL)
	start := time.Now()
	status, body, _ := do(t, http.MethodGet, hs.URL+"/run/acme/x", map[string][]string{"Authorization": {"Bearer " + secret.Value()}}, nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "no credentials for workspace acme") || !strings.Contains(body, "hint: ") {
		t.Errorf("%d %q, want 503 with the daemon's message and hint", status, body)
	}
	if d := time.Since(start); d > DefaultWait {
		t.Errorf("the 503 took %s: a definite answer from the daemon must not wait", d)
	}
	if up.hits.Load() != 0 {
		t.Error("forwarded without a token")
	}
}

// Current never hands out a token with less than the guard left: it waits for a newer one,
// then gives up with ErrStale.
func TestCurrentNeverServesAStaleToken(t *testing.T) {
	tokens, err := NewTokens(Selection{Socket: "/nonexistent/blauthd.sock", MinTTL: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokens.wait = 300 * time.Millisecond
	stale := &Credential{Token: "old", Workspace: "acme", Expiry: time.Now().Add(30 * time.Second)}
	tokens.update(func() { tokens.cred, tokens.connErr = stale, nil })
	if c, err := tokens.Current(context.Background()); !errors.Is(err, ErrStale) {
		t.Errorf("a token with 30 s left, min_ttl 60 s: got %q, %v; want ErrStale", c.Token, err)
	}
	tokens.wait = 30 * time.Second // only a bound: the token comes long before
	go func() {
		time.Sleep(50 * time.Millisecond)
		tokens.update(func() { tokens.cred = &Credential{Token: "new", Workspace: "acme", Expiry: time.Now().Add(time.Hour)} })
	}()
	if c, err := tokens.Current(context.Background()); err != nil || c.Token != "new" {
		t.Errorf("a fresh token arrived during the wait: got %q, %v", c.Token, err)
	}
	// No daemon at all, no token: the wait ends with ErrUnreachable.
	empty, _ := NewTokens(Selection{Socket: "/nonexistent/blauthd.sock"}, nil)
	empty.wait = 100 * time.Millisecond
	if _, err := empty.Current(context.Background()); !errors.Is(err, ipc.ErrUnreachable) {
		t.Errorf("no daemon: %v, want ErrUnreachable", err)
	}
}

// Tokens follows the watch: a source change reaches it, a daemon restart does not lose the
// token it holds, and it reconnects to the new daemon by itself.
func TestTokensFollowChangesAndReconnect(t *testing.T) {
	socket := filepath.Join(testkit.ShortTempDir(t, "px"), "blauthd.sock")
	config := func(key string) string {
		return "context:\n  workspace: acme\nworkspaces:\n- name: acme\n  credentials:\n    apiKey: \"" + key + "\"\ntracking: false\n"
	}
	first := daemontest.Start(t, daemontest.Options{Socket: socket, BLConfig: config("key-1")})
	blPath := filepath.Join(first.Home, ".blaxel", "config.yaml")
	writeKey := func(key string) {
		t.Helper()
		if err := os.WriteFile(blPath, []byte(config(key)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tokens := followTokens(t, Selection{Socket: socket})

	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := tokens.Current(context.Background())
			if err == nil && c.Token == want {
				if c.Workspace != "acme" {
					t.Errorf("workspace %q", c.Workspace)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Current is %q, %v; want %q within 30 s", c.Token, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("key-1")
	writeKey("key-2")
	waitFor("key-2")
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	// No daemon now: the token held (an API key, which does not expire) is still served.
	if c, err := tokens.Current(context.Background()); err != nil || c.Token != "key-2" {
		t.Errorf("with the daemon gone: %q, %v; want the token held", c.Token, err)
	}
	daemontest.Start(t, daemontest.Options{Socket: socket, BLConfig: config("key-3")})
	waitFor("key-3")
	if tokens.Workspace() != "acme" {
		t.Errorf("the selection is pinned to %q, want acme", tokens.Workspace())
	}
}
