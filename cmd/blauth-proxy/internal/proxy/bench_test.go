package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkServer is one request through the proxy on a kept-alive connection, to an upstream
// in the same process: the proxy's own cost, without process boundaries. make bench measures
// the real binary against direct requests (internal/benchreport/proxy.go).
func BenchmarkServer(b *testing.B) {
	e := newTestEnv(b)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"data":[],"meta":{"hasMore":false,"total":0}}`)
	}))
	defer up.Close()
	secret := NewSecret()
	srv, err := NewServer(Config{Tokens: e.tokens, Secret: secret, RunURL: up.URL})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer c.CloseIdleConnections()
	url, auth := hs.URL+"/run/acme/functions/f/mcp", "Bearer "+secret.Value()
	get := func() {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Blaxel-Authorization", auth)
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	get()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		get()
	}
}
