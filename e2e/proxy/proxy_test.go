//go:build sdk

package proxy

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// probeResult is one line of proxy-probe.mjs fetch.
type probeResult struct {
	Name         string `json:"name"`
	Status       int    `json:"status"`
	Body         string `json:"body"`
	EchoedSecret bool   `json:"echoedSecret"`
}

type probe struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	Form string `json:"form"`
}

func probesEnv(t *testing.T, ps ...probe) string {
	b, err := json.Marshal(ps)
	if err != nil {
		t.Fatal(err)
	}
	return "E2E_PROBES=" + string(b)
}

// runProbes runs proxy-probe.mjs fetch under `blauth-helper exec --proxy` and returns its
// results by name.
func (f *fixture) runProbes(t *testing.T, env []string, ps ...probe) map[string]probeResult {
	t.Helper()
	c := f.start(t, append(env, probesEnv(t, ps...)), bins.Helper, "exec", "--proxy", "--", "node", f.script("proxy-probe.mjs"), "fetch")
	got := map[string]probeResult{}
	for range ps {
		var r probeResult
		c.next(&r, 60*time.Second)
		got[r.Name] = r
		t.Logf("probe %q: %d %s", r.Name, r.Status, redactBearer(strings.TrimSpace(r.Body)))
	}
	if err := c.wait(30 * time.Second); err != nil {
		t.Fatalf("the probing run ended with %v", err)
	}
	return got
}

var bearerRE = regexp.MustCompile(`Bearer [A-Za-z0-9._~+/=-]+`)

// redactBearer hides bearer tokens in text meant for the test log.
func redactBearer(s string) string { return bearerRE.ReplaceAllString(s, "Bearer <redacted>") }

// hold is the first line of proxy-probe.mjs hold: what a child of exec --proxy is given.
type hold struct {
	API       string `json:"api"`
	Run       string `json:"run"`
	Workspace string `json:"workspace"`
	KeyLength int    `json:"keyLength"`
}

// A loopback port is open to every local user: the proxy forwards nothing without its run's
// secret. Refused: no credential, a wrong one, a Basic one, and the secret of another run, sent
// by the child of a second `exec --proxy`, whose own proxy serves it.
func TestProxyRefusesRequestsWithoutItsRunsSecret(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b := f.start(t, f.env(), bins.Helper, "exec", "--proxy", "--", "node", f.script("proxy-probe.mjs"), "hold")
	var h hold
	b.next(&h, 60*time.Second)
	t.Logf("the held run's child sees BL_API_URL=%s BL_RUN_URL=%s BL_WORKSPACE=%s and a %d-character BL_API_KEY", h.API, h.Run, h.Workspace, h.KeyLength)
	if !strings.HasPrefix(h.API, "http://127.0.0.1:") || !strings.HasSuffix(h.API, "/api") || h.Run != strings.TrimSuffix(h.API, "/api")+"/run" {
		t.Errorf("the child's BL_API_URL %q and BL_RUN_URL %q are not the proxy's /api and /run on 127.0.0.1", h.API, h.Run)
	}
	if h.Workspace != workspace || h.KeyLength != 43 {
		t.Errorf("the child got BL_WORKSPACE=%q and a %d-character BL_API_KEY, want %q and a 43-character secret (32 bytes, base64url)", h.Workspace, h.KeyLength, workspace)
	}
	before := f.api.APICalls()

	wrong := make([]byte, 32)
	_, _ = rand.Read(wrong)
	wrongSecret := base64.RawURLEncoding.EncodeToString(wrong)
	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"no credential", nil, "no credential"},
		{"a wrong secret", map[string]string{"X-Blaxel-Authorization": "Bearer " + wrongSecret}, "X-Blaxel-Authorization does not carry this run's secret"},
		{"a wrong secret in Authorization", map[string]string{"Authorization": "Bearer " + wrongSecret}, "Authorization does not carry this run's secret"},
		{"Basic credentials", map[string]string{"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, "Authorization does not carry this run's secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, h.API+"/models", nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), tc.want) {
				t.Errorf("want 401 saying %q, got %d %q", tc.want, resp.StatusCode, body)
			}
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("a 401 without WWW-Authenticate")
			}
			if strings.Contains(string(body), wrongSecret) || strings.Contains(string(body), "dXNlcjpwYXNzd29yZA") {
				t.Errorf("the refusal echoes what was sent: %q", body)
			}
		})
	}

	// The child of another run: its own proxy serves it, the held run's refuses it.
	got := f.runProbes(t, f.env(),
		probe{"own proxy", "$API/models", "x-blaxel"},
		probe{"other run", h.API + "/models", "x-blaxel"},
		probe{"other run, Authorization", h.API + "/models", "authorization"},
		probe{"other run, run path", h.Run + "/" + workspace + "/agents/any", "both"})
	if r := got["own proxy"]; r.Status != http.StatusOK {
		t.Errorf("the child's call through its own proxy: %d %q, want 200", r.Status, r.Body)
	}
	for _, name := range []string{"other run", "other run, Authorization", "other run, run path"} {
		r := got[name]
		if r.Status != http.StatusUnauthorized || !strings.Contains(r.Body, "does not carry this run's secret") {
			t.Errorf("%s: %d %q, want 401 saying the secret is not this run's", name, r.Status, r.Body)
		}
		if r.EchoedSecret {
			t.Errorf("%s: the refusal echoes the caller's secret", name)
		}
	}
	after := f.api.APICalls()
	if ok, rejected := after.OK-before.OK, after.Rejected-before.Rejected; ok != 1 || rejected != 0 {
		t.Errorf("the API saw %d good and %d rejected calls, want 1 and 0: only the child's call through its own proxy may reach it", ok, rejected)
	}

	b.close() // the held child ends at the end of its stdin, and its proxy with it
	if err := b.wait(30 * time.Second); err != nil {
		t.Errorf("the held run ended with %v, want status 0", err)
	}
}

// upstream is a run host: it echoes every request's headers (recording them by X-Probe), and
// serves an SSE stream that sends one event, waits for release, then sends two more.
type upstream struct {
	*httptest.Server
	mu      sync.Mutex
	seen    map[string]http.Header
	release chan struct{}
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{seen: map[string]http.Header{}, release: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		name := r.Header.Get("X-Probe")
		if name == "" {
			name = r.URL.Path
		}
		u.seen[name] = r.Header.Clone()
		u.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/logs") {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: one\n\n")
			http.NewResponseController(w).Flush()
			select {
			case <-u.release:
			case <-r.Context().Done():
				return
			case <-time.After(30 * time.Second):
			}
			fmt.Fprint(w, "data: two\n\ndata: three\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"url": r.URL.String(), "headers": r.Header})
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) headers(name string) http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[name]
}

// The upstream gets the daemon's token in exactly the header forms the client used, with
// X-Blaxel-Workspace, and never the secret; an SSE answer reaches the client event by event.
func TestProxyReplacesTheSecretAndStreams(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	up := newUpstream(t)
	env := f.env("BL_RUN_URL=" + up.URL) // the run base, in the user's environment
	path := "$RUN/" + workspace + "/functions/echo/mcp"

	tokenBefore := f.daemonToken(t)
	got := f.runProbes(t, env,
		probe{"x-blaxel", path, "x-blaxel"},
		probe{"authorization", path, "authorization"},
		probe{"both", path, "both"},
		probe{"api", "$API/models", "x-blaxel"})
	tokenAfter := f.daemonToken(t)
	daemonTokens := map[string]bool{"Bearer " + tokenBefore: true, "Bearer " + tokenAfter: true}

	for _, tc := range []struct {
		name           string
		wantX, wantStd bool
	}{{"x-blaxel", true, false}, {"authorization", false, true}, {"both", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			r := got[tc.name]
			if r.Status != http.StatusOK {
				t.Fatalf("the call answered %d %q, want 200", r.Status, r.Body)
			}
			if r.EchoedSecret {
				t.Error("the upstream received the run's secret (its echo of the request holds it)")
			}
			h := up.headers(tc.name)
			for _, form := range []struct {
				header string
				want   bool
			}{{"X-Blaxel-Authorization", tc.wantX}, {"Authorization", tc.wantStd}} {
				vals := h.Values(form.header)
				switch {
				case !form.want && len(vals) != 0:
					t.Errorf("the upstream got %s, which the client did not send", form.header)
				case form.want && (len(vals) != 1 || !daemonTokens[vals[0]]):
					t.Errorf("the upstream's %s is not \"Bearer\" and the daemon's token (%d values)", form.header, len(vals))
				}
			}
			if ws := h.Get("X-Blaxel-Workspace"); ws != workspace {
				t.Errorf("X-Blaxel-Workspace is %q, want %q", ws, workspace)
			}
			for _, k := range []string{"X-Forwarded-For", "Forwarded"} {
				if h.Get(k) != "" {
					t.Errorf("the upstream learnt %s about the local client", k)
				}
			}
		})
	}
	if r := got["api"]; r.Status != http.StatusOK || !strings.Contains(r.Body, "sandbox-openai") {
		t.Errorf("GET $BL_API_URL/models through the proxy: %d %q, want the fake API's model list", r.Status, r.Body)
	}

	// Streaming: the client must see the first event while the upstream still holds the rest.
	s := f.start(t, env, bins.Helper, "exec", "--proxy", "--", "node", f.script("proxy-probe.mjs"), "stream", "$RUN/"+workspace+"/sandboxes/box/logs")
	var first, end struct {
		Event        string `json:"event"`
		Status       int    `json:"status"`
		Text         string `json:"text"`
		EchoedSecret bool   `json:"echoedSecret"`
	}
	s.next(&first, 60*time.Second)
	if first.Event != "first" || first.Status != http.StatusOK || !strings.Contains(first.Text, "data: one") || strings.Contains(first.Text, "two") {
		t.Fatalf("first chunk: %+v, want event one alone", first)
	}
	close(up.release) // only now does the upstream send the rest and end
	s.next(&end, 30*time.Second)
	if end.Event != "end" || !strings.Contains(end.Text, "data: one\n\ndata: two\n\ndata: three\n\n") || end.EchoedSecret {
		t.Errorf("the whole stream: %+v", end)
	}
	daemonTokens["Bearer "+f.daemonToken(t)] = true
	if h := up.headers("/" + workspace + "/sandboxes/box/logs"); !daemonTokens[h.Get("X-Blaxel-Authorization")] {
		t.Error("the streamed request did not carry the daemon's token")
	}
	if err := s.wait(30 * time.Second); err != nil {
		t.Errorf("the streaming run ended with %v", err)
	}
}
