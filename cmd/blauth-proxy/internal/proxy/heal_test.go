package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
)

// healEnv is a real daemon holding acme's client credentials, whose tokens (of the fake API's
// lifetime) it exchanges and refreshes itself, and the erases it served, counted from its log.
type healEnv struct {
	api    *blaxeltest.Server
	socket string
	erases *eraseLog
}

// eraseLog counts the daemon's log lines for the erases it served, and those that dropped a
// token.
type eraseLog struct {
	mu             sync.Mutex
	erases, drops  int
	forwardRefused int // erases refused as the second in a refresh period
}

func (l *eraseLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case bytes.Contains(p, []byte(`"message":"erase"`)):
		l.erases++
		if bytes.Contains(p, []byte(`"dropped":true`)) {
			l.drops++
		}
	case bytes.Contains(p, []byte("erase not done")):
		l.forwardRefused++
	}
	return len(p), nil
}

func (l *eraseLog) counts() (erases, drops, forwardRefused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.erases, l.drops, l.forwardRefused
}

// newHealEnv starts the fake API, whose tokens live ttl (2 h when zero), and the daemon; the
// daemon's own least life to serve is a second, so that short tokens are served.
func newHealEnv(t *testing.T, ttl time.Duration) *healEnv {
	t.Helper()
	api := blaxeltest.New(ttl)
	t.Cleanup(api.Close)
	cc := api.AddClient("sa-acme", "secret")
	api.BindClient("sa-acme", "acme")
	e := &healEnv{api: api, erases: &eraseLog{}}
	e.socket = daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc},
		Mutate: func(c *daemon.Config) {
			c.Log = c.Log.Output(io.MultiWriter(zerolog.NewTestWriter(t), e.erases))
			c.MinTTL = time.Second
		}}).Socket
	return e
}

// exchanges is how many tokens the daemon asked the fake API for.
func (e *healEnv) exchanges() int { return e.api.Count("client_credentials") }

func current(t *testing.T, tokens *Tokens) Credential {
	t.Helper()
	c, err := tokens.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refusingUpstream answers 401 to a token in its refused set, and otherwise echoes the
// workspace and the body it got; it counts the requests per token. With gate set, a refusal
// waits until gate requests with a refused token have come (or 10 s), so that concurrent
// requests are all refused before any heals, however the machine schedules them.
type refusingUpstream struct {
	*recorder
	mu      sync.Mutex
	refused map[string]bool
	seen    map[string]int
	gate    int
	gated   int
	open    chan struct{}
}

func newRefusingUpstream(t *testing.T, refused ...string) *refusingUpstream {
	u := &refusingUpstream{refused: map[string]bool{}, seen: map[string]int{}}
	u.refuse(refused...)
	u.recorder = newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.seen[tok]++
		no := u.refused[tok] || u.refused["*"]
		gated := no && u.gate > 0
		if gated {
			if u.gated++; u.gated == u.gate {
				close(u.open)
			}
		}
		u.mu.Unlock()
		if gated {
			select {
			case <-u.open:
			case <-time.After(10 * time.Second):
			}
		}
		if no {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "upstream: invalid_token", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "ok %s %s", r.Header.Get("X-Blaxel-Workspace"), body)
	})
	return u
}

func (u *refusingUpstream) refuse(tokens ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, tok := range tokens {
		u.refused[tok] = true
	}
}

func (u *refusingUpstream) requestsWith(tok string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[tok]
}

// A 401 through the proxy heals once: concurrent requests refused with the same token cause one
// erase and one exchange, and each is sent again, whole, with the new token. A body of unknown
// length is not held, so its 401 goes back; a request refused again goes back as it is.
func TestProxyHealsARefusedToken(t *testing.T) {
	e := newHealEnv(t, 0)
	tokens := followTokens(t, Selection{Socket: e.socket})
	first := current(t, tokens).Token
	up := newRefusingUpstream(t, first)
	const n = 8
	up.gate, up.open = n, make(chan struct{})
	secret := NewSecret()
	px := startProxy(t, Config{Tokens: tokens, Secret: secret, RunURL: up.URL}, nil)
	auth := map[string][]string{"Authorization": {"Bearer " + secret.Value()}}

	pad := strings.Repeat("b", 64<<10) // over a write buffer: the body is not sent in one piece
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf("call %d %s", i, pad)
			status, got, _ := do(t, http.MethodPost, px.URL+"/run/x", auth, strings.NewReader(body))
			if status != http.StatusOK || got != "ok acme "+body {
				t.Errorf("request %d: %d %.60q, want 200 with its whole body echoed", i, status, got)
			}
		})
	}
	wg.Wait()
	second := current(t, tokens).Token
	if second == first {
		t.Fatal("the refused token is still the current one")
	}
	erases, drops, _ := e.erases.counts()
	if erases != 1 || drops != 1 || e.exchanges() != 2 {
		t.Errorf("%d concurrent 401s for one token: %d erases (%d dropped a token), %d exchanges; want 1, 1 and 2", n, erases, drops, e.exchanges())
	}
	if a, b := up.requestsWith(first), up.requestsWith(second); a != n || b != n {
		t.Errorf("the upstream got %d requests with the refused token and %d with the new one; want %d of each", a, b, n)
	}

	// The new token is refused too. A streamed body (no length) is not held: its 401 goes back,
	// and the token is still named to blauthd, which keeps it: it replaced one in this period.
	up.mu.Lock()
	up.gate = 0
	up.mu.Unlock()
	up.refuse(second)
	pr, pw := io.Pipe()
	go func() { fmt.Fprint(pw, "streamed"); pw.Close() }()
	if status, _, _ := do(t, http.MethodPost, px.URL+"/run/x", auth, pr); status != http.StatusUnauthorized {
		t.Errorf("a streamed body refused: %d, want the upstream's 401", status)
	}
	// A request without a body would be retried, but no new token comes: the 401 goes back.
	if status, body, _ := do(t, http.MethodGet, px.URL+"/run/x", auth, nil); status != http.StatusUnauthorized || !strings.Contains(body, "upstream: invalid_token") {
		t.Errorf("a request refused with no new token to come: %d %q, want the upstream's 401", status, body)
	}
	erases, drops, refused := e.erases.counts()
	if erases != 2 || drops != 1 || refused != 1 || e.exchanges() != 2 {
		t.Errorf("after the second token was refused: %d erases, %d drops, %d refused as the second in a period, %d exchanges; want 2, 1, 1, 2",
			erases, drops, refused, e.exchanges())
	}
	if got := up.requestsWith(second); got != n+2 {
		t.Errorf("the upstream got %d requests with the second token, want %d (no retry)", got, n+2)
	}
}

// An upstream that refuses every token does not make the daemon exchange in a loop: three
// proxies (three runs) on one daemon, many requests each, cost one exchange beyond the first
// token in the refresh period, and every client gets the upstream's 401.
func TestProxyBrokenUpstreamCostsOneExchangePerPeriod(t *testing.T) {
	e := newHealEnv(t, 0)
	up := newRefusingUpstream(t, "*")
	secret := NewSecret()
	auth := map[string][]string{"Authorization": {"Bearer " + secret.Value()}}
	var urls []string
	for range 3 {
		tokens := followTokens(t, Selection{Socket: e.socket})
		urls = append(urls, startProxy(t, Config{Tokens: tokens, Secret: secret, RunURL: up.URL}, nil).URL)
	}
	const rounds, perProxy = 4, 5
	for round := range rounds {
		var wg sync.WaitGroup
		for _, u := range urls {
			for range perProxy {
				wg.Go(func() {
					status, body, _ := do(t, http.MethodPost, u+"/run/x", auth, strings.NewReader(`{"a":1}`))
					if status != http.StatusUnauthorized || !strings.Contains(body, "upstream: invalid_token") {
						t.Errorf("round %d: %d %q, want the upstream's 401", round, status, body)
					}
				})
			}
		}
		wg.Wait()
	}
	erases, drops, _ := e.erases.counts()
	t.Logf("%d requests: %d upstream hits, %d erases at the daemon (%d dropped a token), %d exchanges",
		rounds*perProxy*len(urls), up.hits.Load(), erases, drops, e.exchanges())
	if e.exchanges() != 2 || drops != 1 {
		t.Errorf("%d exchanges, %d erases that dropped a token; want 2 (the first token, one brought forward) and 1", e.exchanges(), drops)
	}
	// Each proxy names each token at most once, whatever the number of requests refused with it.
	if erases > 2*len(urls) {
		t.Errorf("%d erases from %d proxies that saw 2 tokens; want at most %d", erases, len(urls), 2*len(urls))
	}
	// A request is sent at most twice (the retry), and only the first token's requests are retried.
	if max := int64(rounds*perProxy*len(urls) + perProxy*len(urls)); up.hits.Load() > max {
		t.Errorf("the upstream got %d requests, over %d", up.hits.Load(), max)
	}
}

// An MCP server that speaks OAuth (a 401 naming its protected resource metadata) and takes a
// Blaxel token works through the bridge across rotations: the bridge sends the daemon's token,
// and a refused one heals once. Tokens live 20 s here: the daemon refreshes them by itself.
func TestBridgeHealsAcrossRotations(t *testing.T) {
	e := newHealEnv(t, 20*time.Second)
	tokens := followTokens(t, Selection{Socket: e.socket, MinTTL: 2 * time.Second})
	var mu sync.Mutex
	revoked, accepted := map[string]bool{}, map[string]bool{}
	srv := newFakeMCP(t, "")
	srv.accept = func(tok string) bool {
		mu.Lock()
		defer mu.Unlock()
		if !revoked[tok] {
			accepted[tok] = true
		}
		return !revoked[tok]
	}
	revoke := func(tok string) { mu.Lock(); revoked[tok] = true; mu.Unlock() }
	inR, in := io.Pipe()
	out := &syncBuf{}
	done := make(chan error, 1)
	go func() {
		done <- Bridge(context.Background(), BridgeConfig{URL: srv.URL, Tokens: tokens, In: inR, Out: out})
	}()
	t.Cleanup(func() { in.Close() })

	fmt.Fprintln(in, initLine)
	waitOut(t, out, `"id":1,"result"`)
	a := current(t, tokens).Token
	revoke(a) // the server stops taking the first token
	fmt.Fprintln(in, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}`)
	waitOut(t, out, `"id":2,"result"`)
	b := current(t, tokens).Token
	// The daemon refreshes b by itself; the server then refuses the refreshed token.
	deadline := time.Now().Add(60 * time.Second)
	c := b
	for ; c == b && time.Now().Before(deadline); c = current(t, tokens).Token {
		time.Sleep(50 * time.Millisecond)
	}
	if c == b {
		t.Fatal("the daemon did not refresh a 20 s token within 60 s")
	}
	revoke(c)
	fmt.Fprintln(in, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x"}}`)
	waitOut(t, out, `"id":3,"result"`)
	in.Close()
	ended(t, done, "after the rotations")

	if strings.Contains(out.String(), `"error"`) {
		t.Errorf("the client got an error: %s", out.String())
	}
	srv.mu.Lock()
	refused, problems := srv.refused, srv.problems
	srv.mu.Unlock()
	if len(problems) != 0 {
		t.Errorf("the server saw: %q", problems)
	}
	for _, tok := range refused {
		if tok != a && tok != c {
			t.Errorf("the server refused a token that was never revoked")
		}
	}
	mu.Lock()
	distinct := len(accepted)
	mu.Unlock()
	if distinct < 3 || len(refused) < 2 {
		t.Errorf("the server accepted %d tokens and refused %d requests; want at least 3 (two rotations) and 2", distinct, len(refused))
	}
	if erases, drops, _ := e.erases.counts(); erases != 2 || drops != 2 {
		t.Errorf("%d erases at the daemon (%d dropped a token), want 2 and 2: one per refused token", erases, drops)
	}
}

// Without a daemon to ask, a refused token is not healed, and the next 401 asks again rather
// than taking the first attempt for an answer. A token that does not expire is never erased.
func TestHealWithoutADaemon(t *testing.T) {
	logs := &logLines{}
	tokens, err := NewTokens(Selection{Socket: "/nonexistent/blauthd.sock"}, logs.logf)
	if err != nil {
		t.Fatal(err)
	}
	cred := Credential{Token: "tok-refused-1", Workspace: "acme", Expiry: time.Now().Add(time.Hour)}
	tokens.update(func() { tokens.cred, tokens.connErr = &cred, nil })
	for range 2 {
		if c, ok := tokens.Heal(context.Background(), cred); ok {
			t.Fatalf("healed to %q with no daemon", c.Token)
		}
	}
	key := Credential{Token: "bl-key", Workspace: "acme"}
	if _, ok := tokens.Heal(context.Background(), key); ok {
		t.Error("an API key was healed")
	}
	asked := 0
	for _, l := range logs.all() {
		if strings.Contains(l, "cannot ask blauthd") {
			asked++
		}
		if strings.Contains(l, "tok-refused-1") || strings.Contains(l, "bl-key") {
			t.Errorf("a log line holds a token: %q", l)
		}
	}
	if asked != 2 {
		t.Errorf("blauthd was tried %d times for two 401s and an API key; want 2: %q", asked, logs.all())
	}
}
