package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// logLines collects a Server's log lines; safe for concurrent use, and for lines written after
// the test's end.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, a...))
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// served is a Server running Serve on a real loopback listener until stop or the test's end.
type served struct {
	URL  string // http://127.0.0.1:PORT
	Addr string
	srv  *Server
	log  *logLines
	stop func() // stops Serve and waits for it to return (the last summary is then written)
}

// startProxy builds a Server from cfg (its Logf replaced by a collector), lets tweak change it
// before it serves, and serves it.
func startProxy(t *testing.T, cfg Config, tweak func(*Server)) *served {
	t.Helper()
	logs := &logLines{}
	cfg.Logf = logs.logf
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(srv)
	}
	ln, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Serve did not return within 10 s of its context's end")
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			for _, l := range logs.all() {
				t.Logf("proxy log: %s", l)
			}
		}
	})
	return &served{URL: "http://" + ln.Addr().String(), Addr: ln.Addr().String(), srv: srv, log: logs, stop: stop}
}

// rawResponse is what a raw request got.
type rawResponse struct {
	status int
	body   string
	header http.Header
}

// rawRequest sends one request with target exactly as given (no client normalises it) on a
// new connection, and reads the answer, waiting at most 10 s.
func rawRequest(t *testing.T, addr, method, target string, headers ...string) rawResponse {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: " + addr + "\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return rawResponse{resp.StatusCode, string(body), resp.Header}
}
