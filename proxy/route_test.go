package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"testing"
)

// attackTargets are request targets that tried, or could try, to steer the upstream: each is
// refused with want (a 4xx), or, when want is 200, forwarded under the base to its host.
// EVIL stands for the host:port of a server that must never be reached.
var attackTargets = []struct {
	target string
	want   int
}{
	// The separator after the prefix percent-encoded, then user-info syntax: a run base
	// without a path plus the escaped rest made EVIL the host (issue 19).
	{"/run%2F@EVIL/x", http.StatusBadRequest},
	{"/run%2f@EVIL/x", http.StatusBadRequest},
	{"/api%2F@EVIL/x", http.StatusBadRequest},
	{"/run%2F%2FEVIL/x", http.StatusBadRequest},
	{"/run%5C@EVIL/x", http.StatusBadRequest},
	{"/run%3F@EVIL/x", http.StatusBadRequest},
	{"/run%23@EVIL/x", http.StatusBadRequest},
	{"/run%40EVIL/x", http.StatusBadRequest},
	// An escaped prefix was forwarded untrimmed.
	{"/%61pi/models", http.StatusBadRequest},
	{"/%72un/acme/agents/a", http.StatusBadRequest},
	{"/%72%75%6E/@EVIL/x", http.StatusBadRequest},
	{"/ap%69/models", http.StatusBadRequest},
	// Empty segments, authority-like paths.
	{"//EVIL/run/x", http.StatusNotFound},
	{"/run//EVIL/x", http.StatusBadRequest},
	{"/run/%2F@EVIL/x", http.StatusBadRequest},
	{"/api/%2F%2FEVIL/x", http.StatusBadRequest},
	// Dot segments, plain, encoded, and made by decoding.
	{"/run/../api/x", http.StatusBadRequest},
	{"/run/..%2f@EVIL/x", http.StatusBadRequest},
	{"/run/%2e%2e/x", http.StatusBadRequest},
	{"/run/%2E%2e/x", http.StatusBadRequest},
	{"/run/.%2E/x", http.StatusBadRequest},
	{"/run/./x", http.StatusBadRequest},
	{"/run/acme/x%2F..%2F..%2F@EVIL", http.StatusBadRequest},
	{"/run/acme/..", http.StatusBadRequest},
	// Backslashes, fragments, control characters.
	{`/run\@EVIL/x`, http.StatusNotFound},
	{`/run/\EVIL/x`, http.StatusBadRequest},
	{"/run/%5cEVIL/x", http.StatusBadRequest},
	{"/run/x#@EVIL/", http.StatusBadRequest},
	{"/run/x%00/y", http.StatusBadRequest},
	// Targets that are not paths.
	{"http://EVIL/run/x", http.StatusBadRequest},
	{"http://EVIL/api/models", http.StatusBadRequest},
	{"https://user@EVIL/run/x", http.StatusBadRequest},
	// Look-alikes of the prefix.
	{"/run@EVIL/x", http.StatusNotFound},
	{"/api@EVIL/x", http.StatusNotFound},
	{"/runx/EVIL", http.StatusNotFound},
	{"/RUN/x", http.StatusNotFound},
	// User-info syntax and escapes after the separator are data: forwarded, under the base,
	// to the base's host.
	{"/run/@EVIL/x", http.StatusOK},
	{"/run/acme/sandboxes/box/filesystem/tmp%2F@EVIL", http.StatusOK},
	{"/run?@EVIL/x", http.StatusOK},
	{"/run/x?u=http://EVIL/", http.StatusOK},
}

// Every attack target, sent as such on a raw connection to a proxy whose run base is a real
// loopback upstream without a path: refused or forwarded to that upstream, never to the evil
// server, which is a real loopback server too.
func TestServerUpstreamCannotBeSteered(t *testing.T) {
	e := newTestEnv(t)
	var evilHits atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { evilHits.Add(1) }))
	t.Cleanup(evil.Close)
	evilHost := strings.TrimPrefix(evil.URL, "http://")
	up := newRecorder(t, nil)
	upHost := strings.TrimPrefix(up.URL, "http://")
	p, secret := newProxy(t, e, up.URL)
	auth := "X-Blaxel-Authorization: Bearer " + secret.Value()
	for _, tc := range attackTargets {
		target := strings.ReplaceAll(tc.target, "EVIL", evilHost)
		before := up.hits.Load()
		got := rawRequest(t, p.Addr, http.MethodGet, target, auth)
		if got.status != tc.want {
			t.Errorf("%s: %d %q, want %d", target, got.status, got.body, tc.want)
		}
		forwarded := up.hits.Load() > before
		if forwarded != (tc.want == http.StatusOK) {
			t.Errorf("%s: forwarded %v, want %v", target, forwarded, tc.want == http.StatusOK)
		}
		if forwarded {
			if r := up.lastRequest(); r.Host != upHost || r.Header.Get("X-Blaxel-Authorization") != "Bearer "+testKey {
				t.Errorf("%s: the upstream got Host %q, want %q, with the token", target, r.Host, upHost)
			}
		}
	}
	if n := evilHits.Load(); n != 0 {
		t.Errorf("the evil server got %d requests", n)
	}
	for _, l := range p.log.all() {
		if strings.Contains(l, secret.Value()) || strings.Contains(l, testKey) {
			t.Errorf("a log line holds the secret or the token: %q", l)
		}
	}
}

// A path under the base keeps its escapes on the way (the TypeScript SDK sends a sandbox file
// path as one segment, encodeURIComponent'd), and its query as sent.
func TestServerForwardsEscapesUnderTheBase(t *testing.T) {
	e := newTestEnv(t)
	up := newRecorder(t, nil)
	p, secret := newProxy(t, e, up.URL+"/base%2Fpart")
	auth := "Authorization: Bearer " + secret.Value()
	for _, tc := range []struct{ target, want string }{
		{"/run/acme/sandboxes/box/filesystem/tmp%2Fa%40b%3Fc%23d.txt?recursive=true", "/base%2Fpart/acme/sandboxes/box/filesystem/tmp%2Fa%40b%3Fc%23d.txt?recursive=true"},
		{"/run/acme/x%20y/%7Bz%7D", "/base%2Fpart/acme/x%20y/%7Bz%7D"},
		{"/run/acme/{z}|", "/base%2Fpart/acme/%7Bz%7D%7C"},
		{"/run/acme/caf\xc3\xa9", "/base%2Fpart/acme/caf%C3%A9"},
		{"/run", "/base%2Fpart"},
		{"/run/", "/base%2Fpart/"},
	} {
		got := rawRequest(t, p.Addr, http.MethodGet, tc.target, auth)
		if got.status != http.StatusOK {
			t.Errorf("%s: %d %q", tc.target, got.status, got.body)
			continue
		}
		if r := up.lastRequest(); r.RequestURI != tc.want {
			t.Errorf("%s: the upstream got %s, want %s", tc.target, r.RequestURI, tc.want)
		}
	}
}

// The last check before sending: a request whose URL left its base (here by a tampered Rewrite,
// standing for a bug in how the URL is built) is answered 502 and logged as a bug, and nothing
// reaches the host it named.
func TestServerNeverSendsOutsideTheBase(t *testing.T) {
	e := newTestEnv(t)
	var evilHits atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { evilHits.Add(1) }))
	t.Cleanup(evil.Close)
	up := newRecorder(t, nil)
	secret := NewSecret()
	p := startProxy(t, Config{Tokens: e.tokens, Secret: secret, RunURL: up.URL}, func(s *Server) {
		rewrite := s.proxy.Rewrite
		s.proxy.Rewrite = func(pr *httputil.ProxyRequest) {
			rewrite(pr)
			if strings.HasSuffix(pr.In.URL.Path, "/tamper") {
				u := *pr.Out.URL
				u.Host = strings.TrimPrefix(evil.URL, "http://")
				pr.Out.URL = &u
			}
		}
	})
	auth := "X-Blaxel-Authorization: Bearer " + secret.Value()
	got := rawRequest(t, p.Addr, http.MethodGet, "/run/acme/"+secret.Value()+"/tamper", auth)
	if got.status != http.StatusBadGateway || !strings.Contains(got.body, "a bug of blauth-proxy") {
		t.Errorf("a request tampered outside its base: %d %q, want 502 naming a bug", got.status, got.body)
	}
	if evilHits.Load() != 0 || up.hits.Load() != 0 {
		t.Errorf("sent anyway: the evil server got %d, the upstream %d", evilHits.Load(), up.hits.Load())
	}
	if got := rawRequest(t, p.Addr, http.MethodGet, "/run/acme/untouched", auth); got.status != http.StatusOK {
		t.Errorf("an untampered request: %d %q", got.status, got.body)
	}
	bug := false
	for _, l := range p.log.all() {
		if strings.HasPrefix(l, "blauth-proxy bug: refusing to send to http://"+strings.TrimPrefix(evil.URL, "http://")) {
			bug = true
		}
		if strings.Contains(l, secret.Value()) || strings.Contains(l, testKey) {
			t.Errorf("a log line holds the secret or the token: %q", l)
		}
	}
	if !bug {
		t.Errorf("no bug line in the log: %q", p.log.all())
	}
}
