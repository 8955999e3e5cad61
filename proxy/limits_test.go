package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// Headers are bounded before anything else: too many bytes or too many lines are refused,
// with the secret or without, and nothing is forwarded.
func TestServerBoundsHeaders(t *testing.T) {
	e := newTestEnv(t)
	up := newRecorder(t, nil)
	p, secret := newProxy(t, e, up.URL)
	auth := "X-Blaxel-Authorization: Bearer " + secret.Value()
	lines := func(n int) []string {
		h := []string{auth}
		for i := 1; i < n; i++ {
			h = append(h, fmt.Sprintf("X-Filler-%d: v", i))
		}
		return h
	}
	for _, tc := range []struct {
		name    string
		headers []string
		want    int
	}{
		{"70 KiB of headers", []string{auth, "X-Big: " + strings.Repeat("a", 70<<10)}, http.StatusRequestHeaderFieldsTooLarge},
		{"101 header lines", lines(101), http.StatusRequestHeaderFieldsTooLarge},
		{"101 header lines without the secret", lines(102)[1:], http.StatusRequestHeaderFieldsTooLarge},
		{"100 header lines", lines(100), http.StatusOK},
		{"60 KiB of headers", []string{auth, "X-Big: " + strings.Repeat("a", 60<<10)}, http.StatusOK},
	} {
		before := up.hits.Load()
		got := rawRequest(t, p.Addr, http.MethodGet, "/run/acme/agents/a", tc.headers...)
		if got.status != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, got.status, got.body, tc.want)
		}
		if sent := up.hits.Load() > before; sent != (tc.want == http.StatusOK) {
			t.Errorf("%s: forwarded %v", tc.name, sent)
		}
	}
}

// A connection whose request did not carry the secret is closed after the answer: it cannot
// stay open as an idle kept-alive connection.
func TestServerClosesAConnectionWithoutTheSecret(t *testing.T) {
	e := newTestEnv(t)
	p, _ := newProxy(t, e, newRecorder(t, nil).URL)
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /run/acme/x HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer nope\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Errorf("%d, Connection: close %v; want 401 and the connection closed", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("the connection is still open after the 401: %v", err)
	}
}

// At most maxWaiting connections that have not shown the secret are held: one more closes the
// oldest. The child's connection that showed the secret stays, and its new connections get in.
func TestServerHoldsFewConnectionsWithoutTheSecret(t *testing.T) {
	e := newTestEnv(t)
	up := newRecorder(t, nil)
	secret := NewSecret()
	p := startProxy(t, Config{Tokens: e.tokens, Secret: secret, RunURL: up.URL}, func(s *Server) {
		s.limits.maxWaiting = 4
		s.limits.headerTimeout = time.Hour // only the gate closes a waiting connection here
		s.limits.summaryEvery = time.Hour  // one summary, when Serve ends
	})
	auth := "X-Blaxel-Authorization: Bearer " + secret.Value()
	child := newKeptConn(t, p.Addr)
	if status := child.get(t, "/run/acme/a", auth); status != http.StatusOK {
		t.Fatalf("the child's first request: %d", status)
	}
	idle := make([]net.Conn, 5)
	for i := range idle {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle[i] = c
	}
	// The fifth idle connection closed the first.
	if err := readUntilClosed(idle[0]); err != nil {
		t.Errorf("the oldest connection without the secret: %v", err)
	}
	// A new connection of the child gets in (closing the next oldest), and so does the kept one.
	if got := rawRequest(t, p.Addr, http.MethodGet, "/run/acme/b", auth); got.status != http.StatusOK {
		t.Errorf("a new connection of the child with 4 waiting: %d %q", got.status, got.body)
	}
	if err := readUntilClosed(idle[1]); err != nil {
		t.Errorf("the second oldest connection: %v", err)
	}
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if status := child.get(t, "/run/acme/c", auth); status != http.StatusOK {
		t.Errorf("the child's kept connection after 25 others: %d", status)
	}
	if n := up.hits.Load(); n != 3 {
		t.Errorf("the upstream got %d requests, want the child's 3", n)
	}
	p.stop()
	logs := p.log.all()
	if len(logs) != 1 || !strings.Contains(logs[0], "closed ") || !strings.Contains(logs[0], "connections that had not shown the secret (at most 4 such are held)") {
		t.Errorf("the log: %q; want one summary of the connections closed", logs)
	}
}

// Refusals are counted in one line per period, not written one by one, and the line names no
// secret.
func TestServerSummarisesRefusals(t *testing.T) {
	e := newTestEnv(t)
	up := newRecorder(t, nil)
	secret := NewSecret()
	p := startProxy(t, Config{Tokens: e.tokens, Secret: secret, RunURL: up.URL}, func(s *Server) {
		s.limits.summaryEvery = time.Hour
	})
	for i := 0; i < 30; i++ {
		if got := rawRequest(t, p.Addr, http.MethodGet, "/run/acme/a", "Authorization: Bearer wrong-"+secret.Value()[:10]); got.status != http.StatusUnauthorized {
			t.Fatalf("%d", got.status)
		}
	}
	auth := "X-Blaxel-Authorization: Bearer " + secret.Value()
	for _, target := range []string{"/run%2F@evil.example/x", "/elsewhere", "/%61pi/" + secret.Value() + "?key=" + secret.Value()} {
		if got := rawRequest(t, p.Addr, http.MethodGet, target, auth); got.status/100 != 4 {
			t.Fatalf("%s: %d", target, got.status)
		}
	}
	if logs := p.log.all(); len(logs) != 0 {
		t.Errorf("lines written before the period's end: %q", logs)
	}
	p.stop()
	logs := p.log.all()
	want := "in the last 1h0m0s: refused 33 requests (30 without the secret, 3 whose path is not forwarded, last: GET /%61pi/[secret])"
	if len(logs) != 1 || logs[0] != want {
		t.Errorf("the log: %q\nwant one line: %q", logs, want)
	}
}

// keptConn is one kept-alive client connection, as an HTTP client's pool holds.
type keptConn struct {
	c  net.Conn
	br *bufio.Reader
}

func newKeptConn(t *testing.T, addr string) *keptConn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keptConn{c, bufio.NewReader(c)}
}

func (k *keptConn) get(t *testing.T, target string, headers ...string) int {
	t.Helper()
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + target + " HTTP/1.1\r\nHost: p\r\n" + strings.Join(append(headers, ""), "\r\n") + "\r\n"
	if _, err := io.WriteString(k.c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		t.Fatalf("%s on the kept connection: %v", target, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// readUntilClosed waits (at most 10 s) for the server to close c.
func readUntilClosed(c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	switch {
	case errors.Is(err, io.EOF), isReset(err):
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errors.New("still open after 10 s")
	case err == nil:
		return errors.New("the server sent something")
	}
	return err
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// What a client sent is logged without the secret, even escaped.
func TestRedact(t *testing.T) {
	secret := NewSecret()
	s := &Server{secret: secret}
	v := secret.Value()
	escaped := "%" + strings.ToUpper(fmt.Sprintf("%x", v[0])) + v[1:]
	for _, tc := range []struct{ in, want string }{
		{"/run/acme/" + v + "/x?key=" + v, "/run/acme/[secret]/x"},
		{"/run/acme/" + escaped, "[a path that holds the secret, escaped]"},
		{"/run/acme/x\n", "/run/acme/x "},
	} {
		if got := s.redact(tc.in, true); got != tc.want {
			t.Errorf("redact(%q) = %q, want %q", strings.ReplaceAll(tc.in, v, "<secret>"), got, tc.want)
		}
	}
}
