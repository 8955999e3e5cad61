package blauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// world is a fake Blaxel API with a service account bound to workspace acme, and the place of a
// daemon's socket. Tokens live ttl; with the daemon's 30 s min_ttl, a 40 s token is refreshed
// about 4 s after it is issued.
type world struct {
	api    *blaxeltest.Server
	env    []string // the daemon's environment: the service account, BL_WORKSPACE, BL_API_URL
	dir    string
	socket string
	daemon *daemontest.Daemon // the latest one started
}

const workspace = "acme"

func newWorld(t *testing.T, ttl time.Duration) *world {
	t.Helper()
	api := blaxeltest.New(ttl)
	t.Cleanup(api.Close)
	cc := api.AddClient("sa-id", "sa-secret")
	api.BindClient("sa-id", workspace)
	dir := testkit.ShortTempDir(t, "bgo")
	return &world{api: api, dir: dir, socket: filepath.Join(dir, "blauthd.sock"),
		env: []string{"BL_API_URL=" + api.Base, "BL_WORKSPACE=" + workspace, "BL_CLIENT_CREDENTIALS=" + cc}}
}

// startDaemon runs a real daemon in this process on w's socket until the test ends, or until it
// is stopped with stopDaemon.
func (w *world) startDaemon(t *testing.T) {
	t.Helper()
	w.daemon = daemontest.Start(t, daemontest.Options{Socket: w.socket, Env: w.env})
}

// stopDaemon asks the daemon to stop, as blauth-helper stop does, and waits until it has: its
// Run has returned, which releases the lock beside its socket, so another may start then.
func (w *world) stopDaemon(t *testing.T) {
	t.Helper()
	if _, err := w.daemon.Do(t, ipc.KeyAction, ipc.ActionStop); err != nil {
		t.Fatalf("stop the daemon: %v", err)
	}
	if !w.daemon.Stopped(30 * time.Second) {
		t.Fatal("the daemon still runs 30s after it was asked to stop")
	}
}

// opts are the options of a client of w: its socket, an empty directory and no BL_* variable
// of the test's own environment.
func (w *world) opts() Options { return Options{Socket: w.socket, Dir: w.dir, Env: []string{}} }

// source opens a token source on w's daemon and returns it with its first token. The caller
// closes it.
func (w *world) source(t *testing.T) (*TokenSource, *oauth2.Token) {
	t.Helper()
	ts, err := NewTokenSource(ctxFor(t), w.opts())
	if err != nil {
		t.Fatal(err)
	}
	first, err := ts.Token()
	if err != nil {
		ts.Close()
		t.Fatal(err)
	}
	return ts, first
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestToken(t *testing.T) {
	w := newWorld(t, 0)
	w.startDaemon(t)
	want := daemontest.Get(t, w.socket, workspace)

	tok, err := Token(ctxFor(t), w.opts())
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != want.Token || tok.TokenType != "Bearer" || !tok.Expiry.Equal(want.Expiry) {
		t.Errorf("Token = %s %q expiring %s, want the daemon's Bearer token expiring %s",
			tok.TokenType, redact(tok.AccessToken), tok.Expiry, want.Expiry)
	}
	if got := TokenWorkspace(tok); got != workspace {
		t.Errorf("TokenWorkspace = %q, want %q (the daemon's default)", got, workspace)
	}
	if kind, _ := tok.Extra("kind").(string); kind != ipc.KindClientCredentials {
		t.Errorf("kind extra = %q, want %q", kind, ipc.KindClientCredentials)
	}
	if n := w.api.Count("client_credentials"); n != 1 {
		t.Errorf("the token endpoint saw %d exchanges, want the daemon's one", n)
	}
}

func TestTokenErrors(t *testing.T) {
	w := newWorld(t, 0)
	w.startDaemon(t)
	ctx := ctxFor(t)
	secret := "not-a-real-key-but-secret"

	for _, tc := range []struct {
		name     string
		opts     func(o Options) Options
		code     string
		unreach  bool
		mentions string
	}{
		{"unknown workspace", func(o Options) Options { o.Workspace = "nobody"; return o }, CodeNoCredentials, false, ""},
		{"no daemon", func(o Options) Options { o.Socket = filepath.Join(w.dir, "none.sock"); return o }, "", true, ""},
		{"line break in the workspace", func(o Options) Options { o.Workspace = "acme\naction=status"; return o }, CodeBadRequest, false, ""},
		{"line break in a BL_ variable", func(o Options) Options {
			o.Env = []string{"BL_API_KEY=" + secret + "\nmore"}
			return o
		}, CodeBadRequest, false, "BL_API_KEY"},
		{"relative directory", func(o Options) Options { o.Dir = "project"; return o }, CodeBadRequest, false, "relative"},
		{"negative min TTL", func(o Options) Options { o.MinTTL = -time.Second; return o }, CodeBadRequest, false, "MinTTL"},
		{"min TTL longer than tokens live", func(o Options) Options { o.MinTTL = 3 * time.Hour; return o }, CodeUnavailable, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Token(ctx, tc.opts(w.opts()))
			if err == nil {
				t.Fatalf("Token succeeded (%s), want an error", redact(tok.AccessToken))
			}
			if got := ErrorCode(err); got != tc.code {
				t.Errorf("ErrorCode = %q, want %q (error: %v)", got, tc.code, err)
			}
			if errors.Is(err, ErrUnreachable) != tc.unreach {
				t.Errorf("errors.Is(err, ErrUnreachable) = %v, want %v (error: %v)", !tc.unreach, tc.unreach, err)
			}
			if !strings.Contains(err.Error(), tc.mentions) {
				t.Errorf("error %q does not mention %q", err, tc.mentions)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q holds the variable's value", err)
			}
		})
	}
}

func TestTokenCallerEnvironmentCounts(t *testing.T) {
	w := newWorld(t, 0)
	w.startDaemon(t)
	o := w.opts()
	o.Env = []string{"BL_WORKSPACE=mine", "BL_API_KEY=caller-key", "HOME=/nowhere"}
	tok, err := Token(ctxFor(t), o)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "caller-key" || TokenWorkspace(tok) != "mine" || !tok.Expiry.IsZero() {
		t.Errorf("got %q for %q expiring %v; want the caller's API key for mine, without expiry",
			redact(tok.AccessToken), TokenWorkspace(tok), tok.Expiry)
	}
}

func TestTokenSourceFollowsRefreshes(t *testing.T) {
	w := newWorld(t, 40*time.Second)
	w.startDaemon(t)
	ts, first := w.source(t)
	defer ts.Close()
	if want := daemontest.Get(t, w.socket, workspace); first.AccessToken != want.Token {
		t.Fatalf("first token is not the daemon's")
	}
	if ts.Workspace() != workspace {
		t.Errorf("Workspace() = %q, want %q", ts.Workspace(), workspace)
	}
	// The daemon refreshes a 40 s token about 4 s after it was issued; the source must take the
	// new one from the stream, with no request of its own.
	var next *oauth2.Token
	testkit.WaitFor(t, 30*time.Second, "a refreshed token", func() bool {
		var err error
		next, err = ts.Token()
		if err != nil {
			t.Fatal(err)
		}
		return next.AccessToken != first.AccessToken
	})
	if !next.Expiry.After(first.Expiry) {
		t.Errorf("the new token expires at %s, not after the first (%s)", next.Expiry, first.Expiry)
	}
	if want := daemontest.Get(t, w.socket, workspace); next.AccessToken != want.Token {
		t.Errorf("the source's token is not the one the daemon now serves")
	}
}

func TestTokenSourceReconnectsAfterRestart(t *testing.T) {
	w := newWorld(t, 0)
	w.startDaemon(t)
	ts, first := w.source(t)
	defer ts.Close()

	w.stopDaemon(t)
	testkit.WaitFor(t, 30*time.Second, "the source to see the stream end", func() bool { up, _ := ts.Connected(); return !up })
	// While no daemon runs, the last token is still good: the source keeps serving it.
	if tok, err := ts.Token(); err != nil || tok.AccessToken != first.AccessToken {
		t.Errorf("with the daemon away, Token = %v; want the last token, still valid", err)
	}
	_, why := ts.Connected()
	t.Logf("while the daemon is away: %v", why)

	// A new daemon on the same socket (as socket activation would start) exchanges the service
	// account again: the source reconnects on its own and takes its token.
	w.startDaemon(t)
	want := daemontest.Get(t, w.socket, workspace)
	if want.Token == first.AccessToken {
		t.Fatal("the new daemon serves the old token; the test cannot tell a reconnect")
	}
	testkit.WaitFor(t, 30*time.Second, "the new daemon's token", func() bool {
		tok, err := ts.Token()
		return err == nil && tok.AccessToken == want.Token
	})
	if up, err := ts.Connected(); !up {
		t.Errorf("Connected() = false, %v after the reconnect", err)
	}
}

func TestTokenSourceNeverReturnsATokenUnderMinTTL(t *testing.T) {
	w := newWorld(t, 40*time.Second)
	w.startDaemon(t)
	ts, first := w.source(t)
	defer ts.Close()
	// Stop this client's clock a second past the point where the first token falls under the
	// 30 s minimum (a suspend and resume would do that): the daemon, on its own clock, has
	// nothing new to say yet.
	frozen := first.Expiry.Add(-DefaultMinTTL + time.Second)
	ts.now = func() time.Time { return frozen }

	ts.s.wait = 200 * time.Millisecond
	tok, err := ts.Token()
	if err == nil {
		t.Fatalf("Token returned a token with %s left, under the 30 s minimum", tok.Expiry.Sub(ts.now()))
	}
	if ErrorCode(err) != CodeUnavailable {
		t.Errorf("ErrorCode = %q, want %q (%v)", ErrorCode(err), CodeUnavailable, err)
	}
	t.Logf("stale: %v", err)

	// With time to wait, Token waits for the daemon's refresh (about 4 s after the first token
	// was issued) and returns that one.
	ts.s.wait = 15 * time.Second
	tok, err = ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == first.AccessToken || tok.Expiry.Sub(ts.now()) < DefaultMinTTL {
		t.Errorf("Token returned a token with %s left on the moved clock; want the refreshed one with at least 30 s", tok.Expiry.Sub(ts.now()))
	}
}

func TestTokenSourceRefusesAnErrorFirst(t *testing.T) {
	w := newWorld(t, 0)
	w.startDaemon(t)
	before := settledGoroutines()
	o := w.opts()
	o.Workspace = "nobody"
	ts, err := NewTokenSource(ctxFor(t), o)
	if err == nil {
		ts.Close()
		t.Fatal("NewTokenSource for a workspace without credentials succeeded")
	}
	if ErrorCode(err) != CodeNoCredentials {
		t.Errorf("ErrorCode = %q, want %q (%v)", ErrorCode(err), CodeNoCredentials, err)
	}
	o = w.opts()
	o.Socket = filepath.Join(w.dir, "none.sock")
	if _, err := NewTokenSource(ctxFor(t), o); !errors.Is(err, ErrUnreachable) {
		t.Errorf("NewTokenSource with no daemon: %v, want an error wrapping ErrUnreachable", err)
	}
	checkGoroutines(t, before)
}

func TestTokenSourceFollowsALogout(t *testing.T) {
	// A caller API key given through the environment: when the daemon stops serving it (here,
	// the source's own .env changes), the watch says so and Token fails at once.
	w := newWorld(t, 0)
	w.startDaemon(t)
	proj := testkit.ShortTempDir(t, "bgp")
	writeFile(t, filepath.Join(proj, ".env"), "BL_WORKSPACE=proj\nBL_API_KEY=dotenv-key\n")
	o := w.opts()
	o.Dir = proj
	ts, err := NewTokenSource(ctxFor(t), o)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	if tok, err := ts.Token(); err != nil || tok.AccessToken != "dotenv-key" {
		t.Fatalf("Token = %v; want the .env's key", err)
	}
	writeFile(t, filepath.Join(proj, ".env"), "BL_WORKSPACE=proj\n")
	testkit.WaitFor(t, 30*time.Second, "the watch to report the removed key", func() bool {
		_, err := ts.Token()
		return ErrorCode(err) == CodeNoCredentials
	})
}

func TestCloseEndsTheWatch(t *testing.T) {
	w := newWorld(t, 0)
	w.startDaemon(t)
	daemontest.Get(t, w.socket, workspace) // the daemon's exchange, and its HTTP connection, come first
	before := settledGoroutines()

	ts, err := NewTokenSource(ctxFor(t), w.opts())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(); err != nil {
		t.Fatal(err)
	}
	ts.Close()
	ts.Close()
	if _, err := ts.Token(); !errors.Is(err, ErrClosed) {
		t.Errorf("Token after Close: %v, want ErrClosed", err)
	}
	checkGoroutines(t, before)

	// The context given to NewTokenSource ends it too.
	ctx, cancel := context.WithCancel(context.Background())
	ts, err = NewTokenSource(ctx, w.opts())
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-ts.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the watch goroutine still runs 30 s after its context ended")
	}
	if _, err := ts.Token(); !errors.Is(err, ErrClosed) {
		t.Errorf("Token after the context ended: %v, want ErrClosed", err)
	}
	checkGoroutines(t, before)

	// Close ends it while it waits to reconnect to a daemon that went away.
	ts, err = NewTokenSource(ctxFor(t), w.opts())
	if err != nil {
		t.Fatal(err)
	}
	w.stopDaemon(t)
	testkit.WaitFor(t, 30*time.Second, "the source to see the stream end", func() bool { up, _ := ts.Connected(); return !up })
	closed := make(chan struct{})
	go func() { ts.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return within 30 s while the source waited to reconnect")
	}
}

// settledGoroutines counts goroutines once the count stops moving (a daemon's connection
// goroutines end shortly after their client closes).
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// checkGoroutines fails the test unless the goroutine count falls back to before within 30 s.
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before: one was left running\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTransport(t *testing.T) {
	w := newWorld(t, 0)
	w.startDaemon(t)
	ctx := ctxFor(t)
	ts, err := NewTokenSource(ctx, w.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()

	get := func(t *testing.T, c *http.Client) {
		t.Helper()
		resp, err := c.Get(w.api.Base + "/models")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /models: %s %s", resp.Status, body)
		}
	}
	t.Run("NewClient", func(t *testing.T) {
		get(t, NewClient(ctx, ts))
	})
	t.Run("oauth2.NewClient with the workspace header", func(t *testing.T) {
		// oauth2's transport sets Authorization only: Blaxel also wants the workspace.
		base := &http.Client{Transport: headerTransport{HeaderWorkspace, ts.Workspace()}}
		get(t, oauth2.NewClient(context.WithValue(ctx, oauth2.HTTPClient, base), ts))
	})
	t.Run("source error", func(t *testing.T) {
		ts.Close()
		_, err := NewClient(ctx, ts).Get(w.api.Base + "/models")
		if !errors.Is(err, ErrClosed) {
			t.Errorf("GET with a closed source: %v, want ErrClosed", err)
		}
	})
	if st := w.api.APICalls(); st.OK != 2 || st.Rejected != 0 {
		t.Errorf("the API saw %d good calls and %d rejected (%v), want 2 and 0", st.OK, st.Rejected, st.Reasons)
	}
}

type headerTransport struct{ key, value string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.key, h.value)
	return http.DefaultTransport.RoundTrip(r)
}

// The package is for any Go program: it links package ipc, golang.org/x/oauth2 and the
// standard library, nothing else of blauth's.
func TestDependencies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 3 {
		t.Fatalf("go list found %v; want at least this package, ipc and oauth2", deps)
	}
	for _, d := range deps {
		switch {
		case d == "github.com/blauth/blauth/clients/go/blauth", d == "github.com/blauth/blauth/ipc":
		case d == "golang.org/x/oauth2" || strings.HasPrefix(d, "golang.org/x/oauth2/"):
		default:
			t.Errorf("package blauth depends on %s; it may use only ipc, golang.org/x/oauth2 and the standard library", d)
		}
	}
}

// redact stands for a token in messages: its length only.
func redact(tok string) string { return fmt.Sprintf("<%d chars>", len(tok)) }

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
