package proxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/rs/zerolog"
)

// recordingTransport is an upstream that is never dialled: it keeps the last request it was
// given and answers 200.
type recordingTransport struct {
	mu   sync.Mutex
	sent *http.Request
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.sent = r
	rt.mu.Unlock()
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
}

func (rt *recordingTransport) take() *http.Request {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	r := rt.sent
	rt.sent = nil
	return r
}

// FuzzUpstream sends raw request targets (paths, absolute URIs, odd escapes), parsed as the
// HTTP server parses a request line, with the secret: each is refused with 400, 403 or 404, or
// the request that reaches the transport goes to exactly the configured scheme and host,
// without user info, under the base's path, with the token. Under /host/ the host is the
// path's first segment and must be under a run domain (bl.run, 127.0.0.1) on a label
// boundary, https (http to loopback), on port 443 (any on loopback). The seeds (testdata/fuzz/FuzzUpstream) are
// the known attacks; plain go test replays them.
func FuzzUpstream(f *testing.F) {
	// The daemon and the token follower write nothing: a log line written to f while the
	// fuzz function runs is refused by package testing.
	api := blaxeltest.New(0)
	f.Cleanup(api.Close)
	api.AddAPIKey(testKey, "acme")
	socket := daemontest.Start(f, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=" + testKey},
		Mutate: func(c *daemon.Config) { c.Log = zerolog.Nop() }}).Socket
	tokens, err := NewTokens(Selection{Socket: socket}, nil)
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tokens.Run(ctx) }()
	f.Cleanup(func() { cancel(); <-done })
	cred, err := tokens.Current(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	const runBase = "https://run.example.test" // no path, as run.blaxel.ai
	rt := &recordingTransport{}
	logs := &logLines{}
	secret := NewSecret()
	srv, err := NewServer(Config{Tokens: tokens, Secret: secret, RunURL: runBase, RunDomains: []string{"bl.run", "127.0.0.1"}, Transport: rt, Logf: logs.logf})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.refusals.flush)
	apiBase, err := url.Parse(cred.APIURL)
	if err != nil {
		f.Fatal(err)
	}
	runURL, _ := url.Parse(runBase)
	var mu sync.Mutex // the transport keeps one request: one target at a time
	f.Fuzz(func(t *testing.T, target string) {
		if target == "" || strings.ContainsAny(target, " \t\r\n") {
			return // not one request target
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
			"X-Blaxel-Authorization: Bearer " + secret.Value() + "\r\n\r\n")))
		if err != nil {
			return // the server refuses it before the proxy sees it
		}
		req.RemoteAddr = "127.0.0.1:1"
		mu.Lock()
		defer mu.Unlock()
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		sent := rt.take()
		for _, l := range logs.all() {
			if strings.Contains(l, "bug") {
				t.Fatalf("%q: %s", target, l)
			}
		}
		if sent == nil {
			if w.Code != http.StatusBadRequest && w.Code != http.StatusNotFound && w.Code != http.StatusForbidden {
				t.Fatalf("%q: not sent, answered %d %q", target, w.Code, w.Body.String())
			}
			return
		}
		want := apiBase
		switch {
		case underPrefix(req.URL.Path, RunPrefix):
			want = runURL
		case underPrefix(req.URL.Path, HostPrefix):
			want = wantRunHost(t, target, sent.URL)
		}
		u := sent.URL
		basePath := strings.TrimRight(want.Path, "/")
		if w.Code != http.StatusOK || u.Scheme != want.Scheme || u.Host != want.Host || u.User != nil || sent.Host != "" ||
			!(u.Path == basePath || strings.HasPrefix(u.Path, basePath+"/")) {
			t.Fatalf("%q: sent to %s (scheme %q host %q user %v path %q, Host header %q), answered %d; want under %s",
				target, u, u.Scheme, u.Host, u.User, u.Path, sent.Host, w.Code, want)
		}
		// The path that goes on the wire, read back in a URL, names the same host.
		if again, err := url.Parse(u.Scheme + "://" + u.Host + u.EscapedPath()); err != nil || again.Host != want.Host || again.User != nil {
			t.Fatalf("%q: the path sent %q does not read back under the host %s: %v", target, u.EscapedPath(), want.Host, err)
		}
		if sent.Header.Get("X-Blaxel-Authorization") != "Bearer "+testKey {
			t.Fatalf("%q: sent without the token", target)
		}
	})
}

// wantRunHost checks the host a /host/ target was sent to by the rules, written out again here:
// the target's first segment after /host/, in lower case, names it (":443" dropped); the host
// is bl.run or ends in ".bl.run" (https, port 443), or is 127.0.0.1 (http, any port).
func wantRunHost(t *testing.T, target string, sent *url.URL) *url.URL {
	t.Helper()
	seg, _, _ := strings.Cut(strings.TrimPrefix(target, HostPrefix+"/"), "/")
	seg, _, _ = strings.Cut(seg, "?")
	seg = strings.ToLower(seg)
	host, port, _ := strings.Cut(seg, ":")
	want := &url.URL{Scheme: "https", Host: strings.TrimSuffix(seg, ":443")}
	switch {
	case host == "127.0.0.1":
		want.Scheme = "http"
		if n, err := strconv.Atoi(port); port != "" && (err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port) {
			t.Fatalf("%q: sent to %s, with a port that is not one", target, sent)
		}
	case host == "bl.run" || strings.HasSuffix(host, ".bl.run"):
		if port != "" && port != "443" {
			t.Fatalf("%q: sent to %s, a run host on port %q", target, sent, port)
		}
		for _, label := range strings.Split(host, ".") {
			if label == "" || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				t.Fatalf("%q: sent to %s, whose host is not a host name", target, sent)
			}
		}
	default:
		t.Fatalf("%q: sent to %s, not under a run domain", target, sent)
	}
	if sent.Host != want.Host || sent.Scheme != want.Scheme {
		t.Fatalf("%q: sent to %s://%s, want %s", target, sent.Scheme, sent.Host, want)
	}
	return want
}
