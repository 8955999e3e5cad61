package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"testing"
)

// BenchmarkServer is requests through the proxy on kept-alive connections (1, and 64 as make
// bench loads it), to an upstream in the same process: the proxy's own cost, without process
// boundaries. make bench measures the real binary against a bare ReverseProxy process
// (internal/benchreport/proxy.go).
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
	url, auth := hs.URL+"/run/acme/functions/f/mcp", "Bearer "+secret.Value()
	for _, conns := range []int{1, 64} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns}}
			defer c.CloseIdleConnections()
			get := func() error {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("X-Blaxel-Authorization", auth)
				resp, err := c.Do(req)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			if err := get(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			if conns == 1 {
				for b.Loop() {
					if err := get(); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(max(1, conns/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := get(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkHandler is one request through the proxy's handler alone, beside a bare
// httputil.ReverseProxy handler, both sending to a transport that answers at once from memory:
// what the proxy's own code costs per request, in CPU and allocations, with no network.
func BenchmarkHandler(b *testing.B) {
	e := newTestEnv(b)
	body := []byte(`{"data":[],"meta":{"hasMore":false,"total":0}}`)
	stub := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			r.Body.Close()
		}
		return &http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/json"}}, ContentLength: int64(len(body)),
			Body: io.NopCloser(bytes.NewReader(body)), Request: r}, nil
	})
	const upURL = "http://127.0.0.1:9"
	secret := NewSecret()
	srv, err := NewServer(Config{Tokens: e.tokens, Secret: secret, RunURL: upURL, Transport: stub})
	if err != nil {
		b.Fatal(err)
	}
	u, _ := url.Parse(upURL)
	bare := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }, Transport: stub}
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"blauth", srv}} {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/run/acme/functions/f/mcp", nil)
			req.Header.Set("X-Blaxel-Authorization", "Bearer "+secret.Value())
			serve := func() {
				w := httptest.NewRecorder()
				c.h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			serve()
			b.ReportAllocs()
			for b.Loop() {
				serve()
			}
		})
	}
}
