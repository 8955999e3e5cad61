package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

func TestParseRunDomains(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{" Sandbox.Example.COM , ,preview.example.com", []string{"sandbox.example.com", "preview.example.com"}, ""},
		{"127.0.0.1,localhost", []string{"127.0.0.1", "localhost"}, ""},
		{"com", nil, "single label"},
		{"https://bl.run", nil, "not a host name"},
		{"bl.run:443", nil, "not a host name"},
		{"*.bl.run", nil, "not a host name"},
		{".bl.run", nil, "not a host name"},
		{"bl.run.", nil, "not a host name"},
		{"-x.bl.run", nil, "not a host name"},
		{"user@bl.run", nil, "not a host name"},
		{"[::1]", nil, "not a host name"},
	} {
		got, err := ipc.ParseRunDomains(tc.in)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("ParseRunDomains(%q) = %q, %v; want %q and an error saying %q", tc.in, got, err, tc.want, tc.err)
		}
	}
	if got := RunDomains("https://api.blaxel.ai/v0/", []string{"x.example.com"}); strings.Join(got, ",") != "bl.run,x.example.com" {
		t.Errorf("RunDomains(prod) = %q", got)
	}
	if got := RunDomains("https://api.blaxel.dev/v0", nil); strings.Join(got, ",") != "runv2.blaxel.dev" {
		t.Errorf("RunDomains(dev) = %q", got)
	}
	if got := RunDomains("http://127.0.0.1:9/v0", nil); len(got) != 0 {
		t.Errorf("RunDomains(a local API) = %q, want none: no run domain is implied", got)
	}
}

// TestHostRules is the /host route's rule on the host segment: under a run domain on a label
// boundary, https (http to loopback only), port 443 only (any on loopback), sent literally.
func TestHostRules(t *testing.T) {
	domains := []string{"bl.run", "preview.example.com", "127.0.0.1"}
	for _, tc := range []struct {
		seg    string
		want   string // the upstream base, "" when refused
		status int
	}{
		{"sbx-a-1234.us-pdx-1.bl.run", "https://sbx-a-1234.us-pdx-1.bl.run", 0},
		{"SBX.Us-Pdx-1.BL.RUN", "https://sbx.us-pdx-1.bl.run", 0},
		{"bl.run", "https://bl.run", 0},
		{"x.bl.run:443", "https://x.bl.run", 0},
		{"abc.preview.example.com", "https://abc.preview.example.com", 0},
		{"127.0.0.1:8080", "http://127.0.0.1:8080", 0},
		{"127.0.0.1", "http://127.0.0.1", 0},
		// Not under a domain, or only by a look-alike.
		{"evilbl.run", "", http.StatusForbidden},
		{"bl.run.evil.example", "", http.StatusForbidden},
		{"x.bl.run.evil.example", "", http.StatusForbidden},
		{"example.com", "", http.StatusForbidden},
		{"preview.example.com.evil.example", "", http.StatusForbidden},
		{"1.127.0.0.1", "", http.StatusForbidden},
		{"127.0.0.2:8080", "", http.StatusForbidden},
		{"localhost:8080", "", http.StatusForbidden},
		{"api.blaxel.ai", "", http.StatusForbidden},
		// Not a plain host name, or a port other than 443.
		{"x.bl.run.", "", http.StatusForbidden},
		{"x..bl.run", "", http.StatusForbidden},
		{"x_y.bl.run", "", http.StatusForbidden},
		{"x.bl.run:8443", "", http.StatusForbidden},
		{"x.bl.run:0443", "", http.StatusForbidden},
		{"x.bl.run:", "", http.StatusForbidden},
		{"x.bl.run:443:443", "", http.StatusForbidden},
		{"127.0.0.1:0", "", http.StatusForbidden},
		{"127.0.0.1:65536", "", http.StatusForbidden},
		{"x.bl.run:https", "", http.StatusForbidden},
		// Escaped, user info, brackets.
		{"user@x.bl.run", "", http.StatusBadRequest},
		{"evil.example%2f@x.bl.run", "", http.StatusBadRequest},
		{"x%2Ebl.run", "", http.StatusBadRequest},
		{"[::1]:80", "", http.StatusBadRequest},
	} {
		rest := "/" + tc.seg + "/process"
		dec, err := url.PathUnescape(rest)
		if err != nil {
			dec = rest
		}
		base, sub, subRaw, status, err := hostRoute(dec, rest, domains)
		if tc.want == "" {
			if err == nil || status != tc.status {
				t.Errorf("%q: routed to %v (%d, %v); want %d", tc.seg, base, status, err, tc.status)
			}
			continue
		}
		if err != nil || base.String() != tc.want || sub != "/process" || subRaw != "/process" {
			t.Errorf("%q: %v %q %q (%d, %v); want %s and /process", tc.seg, base, sub, subRaw, status, err, tc.want)
			continue
		}
		if u := base.join(sub, subRaw, ""); checkRunHostURL(&u, domains) != nil || !base.holds(&u) {
			t.Errorf("%q: the URL built, %s, fails its check", tc.seg, u.String())
		}
	}
	for _, rest := range []string{"", "/"} {
		if _, _, _, status, err := hostRoute(rest, rest, domains); err == nil || status != http.StatusNotFound {
			t.Errorf("hostRoute(%q): %d %v; want 404", rest, status, err)
		}
	}
	// The check after building refuses what no route builds, too.
	for _, raw := range []string{"http://x.bl.run/", "https://u@x.bl.run/", "ftp://x.bl.run/", "https://x.bl.run:80/", "https://X.bl.run/"} {
		u, _ := url.Parse(raw)
		if checkRunHostURL(u, domains) == nil {
			t.Errorf("checkRunHostURL(%s) passes", raw)
		}
	}
}

// TestHostRouteForwardsWithTheToken: a /host route reaches the host, under no other path, with
// the daemon's token; a host outside the run domains is refused and nothing is sent.
func TestHostRouteForwardsWithTheToken(t *testing.T) {
	e := newTestEnv(t)
	up := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/elsewhere?a=1", http.StatusFound)
			return
		}
		_, _ = io.WriteString(w, "upstream ok\n")
	})
	upHost := strings.TrimPrefix(up.URL, "http://")
	secret := NewSecret()
	hs := startProxy(t, Config{Tokens: e.tokens, Secret: secret, RunURL: up.URL, RunDomains: []string{"127.0.0.1"}}, nil)
	h := map[string][]string{"X-Blaxel-Authorization": {"Bearer " + secret.Value()}}
	status, body, _ := do(t, http.MethodGet, hs.URL+"/host/"+upHost+"/filesystem/tmp%2Fa.txt?x=1", h, nil)
	if status != http.StatusOK || body != "upstream ok\n" {
		t.Fatalf("GET /host/%s/…: %d %q", upHost, status, body)
	}
	r := up.lastRequest()
	if r.URL.EscapedPath() != "/filesystem/tmp%2Fa.txt" || r.URL.RawQuery != "x=1" || r.Header.Get("X-Blaxel-Authorization") != "Bearer "+testKey {
		t.Errorf("the host got %s?%s with X-Blaxel-Authorization %q", r.URL.EscapedPath(), r.URL.RawQuery, strings.ReplaceAll(r.Header.Get("X-Blaxel-Authorization"), secret.Value(), "<secret>"))
	}
	// A redirect on the host is pointed back at the same /host route, which the client follows.
	if status, body, _ := do(t, http.MethodGet, hs.URL+"/host/"+upHost+"/moved", h, nil); status != http.StatusOK || body != "upstream ok\n" {
		t.Errorf("GET a redirect: %d %q", status, body)
	}
	if r := up.lastRequest(); r.URL.Path != "/elsewhere" || r.URL.RawQuery != "a=1" || r.Header.Get("X-Blaxel-Authorization") != "Bearer "+testKey {
		t.Errorf("the redirect led the client to %s?%s on the host, not through the /host route with the token", r.URL.Path, r.URL.RawQuery)
	}
	before := up.hits.Load()
	for _, target := range []string{"/host/evil.example/x", "/host/localhost:" + up.URL[strings.LastIndexByte(up.URL, ':')+1:] + "/x", "/host/127.0.0.1.nip.io/x", "/host/" + upHost + "%2F..%2F/x", "/host%2F" + upHost + "/x", "/host//x"} {
		status, body, _ := do(t, http.MethodGet, hs.URL+target, h, nil)
		if status < 400 || status >= 500 {
			t.Errorf("GET %s: %d %q, want a refusal", target, status, body)
		}
	}
	if n := up.hits.Load() - before; n != 0 {
		t.Errorf("%d refused routes reached the host", n)
	}
}

// TestSandboxAnswersPointAtTheProxy: the API's answer about a sandbox names the sandbox's host
// as the proxy's /host route, through which the sandbox host gets the daemon's token; a
// preview's spec.url likewise; other answers are passed on unchanged.
func TestSandboxAnswersPointAtTheProxy(t *testing.T) {
	e := newTestEnv(t)
	sbx := blaxeltest.NewSandboxHost(e.api)
	t.Cleanup(sbx.Close)
	sbxHost := strings.TrimPrefix(sbx.URL, "http://")
	e.api.AddSandbox("box", sbx.URL)
	e.api.AddPreview("box", "web", sbx.URL+"/app?v=1")
	secret := NewSecret()
	up := newRecorder(t, nil)
	hs := startProxy(t, Config{Tokens: e.tokens, Secret: secret, RunURL: up.URL, RunDomains: []string{"127.0.0.1"}}, nil)
	h := map[string][]string{"X-Blaxel-Authorization": {"Bearer " + secret.Value()}, "X-Blaxel-Workspace": {"acme"}, "Accept-Encoding": {"gzip"}}
	status, body, hdr := do(t, http.MethodGet, hs.URL+"/api/sandboxes/box", h, nil)
	var got struct {
		Metadata struct{ Name, URL string }
		Status   string
	}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil {
		t.Fatalf("GET /api/sandboxes/box: %d %q", status, body)
	}
	if want := hs.URL + "/host/" + sbxHost; got.Metadata.URL != want || got.Metadata.Name != "box" || got.Status != "DEPLOYED" {
		t.Errorf("the sandbox: %+v; want metadata.url %s", got, want)
	}
	if hdr.Get("Content-Length") != "" && hdr.Get("Content-Length") != itoa(len(body)) {
		t.Errorf("Content-Length %s for %d bytes", hdr.Get("Content-Length"), len(body))
	}
	// The SDK's next call, at the URL given.
	put := strings.NewReader(`{"content":"hello"}`)
	if status, body, _ := do(t, http.MethodPut, got.Metadata.URL+"/filesystem/tmp%2Fa.txt", h, put); status != http.StatusOK {
		t.Fatalf("PUT through the sandbox URL: %d %q", status, body)
	}
	if c, ok := sbx.File("/tmp/a.txt"); !ok || c != "hello" {
		t.Errorf("the sandbox host holds %q (%v)", c, ok)
	}
	if calls := sbx.Calls(); calls.OK != 1 || len(calls.Refused) != 0 || calls.Tokens[testKey] != 1 {
		t.Errorf("the sandbox host: %d served, refused %v, tokens seen %d; want one call, with the daemon's token", calls.OK, calls.Refused, len(calls.Tokens))
	}
	status, body, _ = do(t, http.MethodGet, hs.URL+"/api/sandboxes/box/previews/web", h, nil)
	var prev struct{ Spec struct{ URL string } }
	if status != http.StatusOK || json.Unmarshal([]byte(body), &prev) != nil || prev.Spec.URL != hs.URL+"/host/"+sbxHost+"/app?v=1" {
		t.Errorf("GET the preview: %d %q; want spec.url under %s/host/%s", status, body, hs.URL, sbxHost)
	}
	if status, body, _ := do(t, http.MethodGet, prev.Spec.URL, h, nil); status != http.StatusOK || body != "preview ok: /app\n" {
		t.Errorf("GET the preview URL: %d %q", status, body)
	}
	// An answer outside /sandboxes is not rewritten, nor an error answer.
	if status, body, _ := do(t, http.MethodGet, hs.URL+"/api/models", h, nil); status != http.StatusOK || !strings.Contains(body, "sandbox-openai") || strings.Contains(body, "/host/") {
		t.Errorf("GET /api/models: %d %q", status, body)
	}
	if status, body, _ := do(t, http.MethodGet, hs.URL+"/api/sandboxes/nobox", h, nil); status != http.StatusNotFound || !strings.Contains(body, "no such sandbox") {
		t.Errorf("GET an unknown sandbox: %d %q", status, body)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestRewriteRunURLs(t *testing.T) {
	const proxy = "http://127.0.0.1:7"
	for _, tc := range []struct {
		name   string
		fields answerFields
		in     string
		want   string // "" unchanged
	}{
		{"one sandbox", metadataURL, `{"metadata":{"name":"a","url":"https://sbx-a.us-pdx-1.bl.run"},"spec":{"x":1.50}}`,
			`{"metadata":{"name":"a","url":"http://127.0.0.1:7/host/sbx-a.us-pdx-1.bl.run"},"spec":{"x":1.50}}`},
		{"a list", metadataURL, `[{"metadata":{"url":"https://A.bl.run/p"}},{"metadata":{"name":"b"}}]`,
			`[{"metadata":{"url":"http://127.0.0.1:7/host/a.bl.run/p"}},{"metadata":{"name":"b"}}]`},
		{"a list in data", metadataURL, `{"data":[{"metadata":{"url":"https://a.bl.run"}}],"meta":{"hasMore":false}}`,
			`{"data":[{"metadata":{"url":"http://127.0.0.1:7/host/a.bl.run"}}],"meta":{"hasMore":false}}`},
		{"a preview", metadataURL | specURL, `{"metadata":{"name":"p"},"spec":{"url":"https://x.preview.bl.run/?a=<b>"}}`,
			`{"metadata":{"name":"p"},"spec":{"url":"http://127.0.0.1:7/host/x.preview.bl.run/?a=<b>"}}`},
		{"spec.url not asked for", metadataURL, `{"spec":{"url":"https://x.bl.run"}}`, ""},
		{"user info", metadataURL, `{"metadata":{"url":"https://u:p@x.bl.run"}}`, ""},
		{"not http", metadataURL, `{"metadata":{"url":"ftp://x.bl.run"}}`, ""},
		{"not a URL", metadataURL, `{"metadata":{"url":42}}`, ""},
		{"a bracketed host", metadataURL, `{"metadata":{"url":"http://[::1]:80/"}}`, ""},
		{"not JSON", metadataURL, `{"metadata":`, ""},
		{"a string", metadataURL, `"https://x.bl.run"`, ""},
		{"data deeper is data", metadataURL, `{"data":{"data":[{"metadata":{"url":"https://x.bl.run"}}]}}`, ""},
		{"a list in a list", metadataURL, `[[{"metadata":{"url":"https://x.bl.run"}}]]`, ""},
		{"data not at the top", metadataURL, `[{"data":[{"metadata":{"url":"https://x.bl.run"}}]}]`, ""},
	} {
		out, changed := rewriteValue([]byte(tc.in), tc.fields, proxy, true)
		if tc.want == "" {
			if changed || string(out) != tc.in {
				t.Errorf("%s: rewritten to %s", tc.name, out)
			}
			continue
		}
		var a, b any
		if !changed || json.Unmarshal(out, &a) != nil || json.Unmarshal([]byte(tc.want), &b) != nil || !jsonEqual(a, b) {
			t.Errorf("%s: %s (changed %v), want %s", tc.name, out, changed, tc.want)
		}
		if strings.Contains(tc.in, "<b>") && !bytes.Contains(out, []byte("<b>")) {
			t.Errorf("%s: HTML characters escaped: %s", tc.name, out)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestRewriteAnswerIsBounded: an answer about sandboxes over maxAnswerBytes is refused (502 by
// the proxy's error handler), declared or not; one of another type streams untouched.
func TestRewriteAnswerIsBounded(t *testing.T) {
	ctx := context.WithValue(context.Background(), http.LocalAddrContextKey, net.Addr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7}))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:7/api/sandboxes", nil)
	answer := func(ctype string, n int, declared bool) *http.Response {
		body := `[{"metadata":{"url":"https://a.bl.run"}}` + strings.Repeat(" ", n) + `]`
		r := &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {ctype}}, Body: io.NopCloser(strings.NewReader(body)), Request: req, ContentLength: -1}
		if declared {
			r.ContentLength = int64(len(body))
		}
		return r
	}
	for _, declared := range []bool{true, false} {
		if err := rewriteAnswer(answer("application/json", maxAnswerBytes, declared), metadataURL); !errors.Is(err, errAnswerTooLong) {
			t.Errorf("an answer over the cap (length declared %v): %v", declared, err)
		}
	}
	resp := answer("application/json; charset=utf-8", 10, false)
	if err := rewriteAnswer(resp, metadataURL); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); !bytes.Contains(b, []byte("127.0.0.1:7/host/a.bl.run")) || resp.ContentLength != int64(len(b)) {
		t.Errorf("a small answer: %s (length %d)", b, resp.ContentLength)
	}
	resp = answer("text/plain", maxAnswerBytes, false)
	body := resp.Body
	if err := rewriteAnswer(resp, metadataURL); err != nil || resp.Body != body {
		t.Errorf("a text answer was read (%v): it must stream", err)
	}
}

// The run_domains: of blauth's config file come with the daemon's token: a daemon that has
// them opens the /host route to their hosts, as BLAUTH_RUN_DOMAINS does; one without, not.
func TestRunDomainsFromTheDaemon(t *testing.T) {
	up := newRecorder(t, nil)
	upHost := strings.TrimPrefix(up.URL, "http://")
	for _, tc := range []struct {
		name    string
		domains []string
		want    int
	}{{"run_domains set", []string{"127.0.0.1"}, http.StatusOK}, {"none", nil, http.StatusForbidden}} {
		t.Run(tc.name, func(t *testing.T) {
			api := blaxeltest.New(0)
			t.Cleanup(api.Close)
			api.AddAPIKey(testKey, "acme")
			socket := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=" + testKey},
				Mutate: func(c *daemon.Config) { c.RunDomains = tc.domains }}).Socket
			secret := NewSecret()
			hs := startProxy(t, Config{Tokens: followTokens(t, Selection{Socket: socket}), Secret: secret, RunURL: up.URL}, nil)
			status, body, _ := do(t, http.MethodGet, hs.URL+"/host/"+upHost+"/x", map[string][]string{"Authorization": {"Bearer " + secret.Value()}}, nil)
			if status != tc.want {
				t.Errorf("GET /host/%s/x: %d %q; want %d", upHost, status, body, tc.want)
			}
		})
	}
}

// The command runs with HTTP/2 off in the TypeScript SDK, whatever the caller had: with it on,
// the SDK sends sandbox calls over a session of its own to its region's edge, around the proxy.
func TestChildEnvTurnsHTTP2Off(t *testing.T) {
	env := childEnv([]string{"BL_DISABLE_H2=false", "PATH=/bin"}, "http://127.0.0.1:7", "acme", "s3cret")
	n := 0
	for _, kv := range env {
		if strings.HasPrefix(kv, "BL_DISABLE_H2=") {
			n++
			if kv != "BL_DISABLE_H2=true" {
				t.Errorf("the command gets %s", kv)
			}
		}
	}
	if n != 1 {
		t.Errorf("BL_DISABLE_H2 set %d times in %q", n, env)
	}
}
