package blauth

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
)

// The shapes of the Blaxel Go SDK's option.MiddlewareNext and option.Middleware (both type
// aliases there), written out so that this test checks Middleware fits them without importing
// the SDK; e2e/gosdk runs it with the SDK itself.
type (
	sdkMiddlewareNext = func(*http.Request) (*http.Response, error)
	sdkMiddleware     = func(*http.Request, sdkMiddlewareNext) (*http.Response, error)
)

func TestMiddleware(t *testing.T) {
	w := newWorld(t, 40*time.Second) // refreshed by the daemon about 4 s after each issue
	w.startDaemon(t)
	ts, first := w.source(t)
	defer ts.Close()
	var mw sdkMiddleware = Middleware(ts)

	// next is the end of the chain, as the SDK's HTTP client is: it notes what it was given.
	var seen *http.Request
	next := func(r *http.Request) (*http.Response, error) {
		seen = r
		return http.DefaultClient.Do(r)
	}
	call := func(t *testing.T) string {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxFor(t), http.MethodGet, w.api.Base+"/models", nil)
		if err != nil {
			t.Fatal(err)
		}
		// What the SDK set itself from a token of its own, and a header of the caller's.
		req.Header.Set(HeaderAuthorization, "Bearer sdk-own-token")
		req.Header.Set("X-Caller", "kept")
		seen = nil
		resp, err := mw(req, next)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /models through the middleware: %s %s", resp.Status, body)
		}
		if seen == nil {
			t.Fatal("the middleware did not call next")
		}
		if got := seen.Header.Get(HeaderWorkspace); got != workspace {
			t.Errorf("next got %s %q, want %q", HeaderWorkspace, got, workspace)
		}
		if got := seen.Header.Get("X-Caller"); got != "kept" {
			t.Errorf("next got X-Caller %q, want the caller's header kept", got)
		}
		if got := req.Header.Get(HeaderAuthorization); got != "Bearer sdk-own-token" {
			t.Errorf("the caller's request was changed: %s is now %s", HeaderAuthorization, redact(got))
		}
		return seen.Header.Get(HeaderAuthorization)
	}

	if got := call(t); got != "Bearer "+first.AccessToken {
		t.Errorf("next got %s %s, want the daemon's token %s", HeaderAuthorization, redact(got), redact(first.AccessToken))
	}
	// After the daemon's refresh, the next request carries the new token.
	testkit.WaitFor(t, 30*time.Second, "the daemon's refresh to reach the token source", func() bool {
		tok, err := ts.Token()
		return err == nil && tok.AccessToken != first.AccessToken
	})
	now, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if got := call(t); got != "Bearer "+now.AccessToken {
		t.Errorf("after a refresh next got %s %s, want the new token %s", HeaderAuthorization, redact(got), redact(now.AccessToken))
	}

	ts.Close()
	req, err := http.NewRequestWithContext(ctxFor(t), http.MethodGet, w.api.Base+"/models", nil)
	if err != nil {
		t.Fatal(err)
	}
	called := false
	if _, err := mw(req, func(r *http.Request) (*http.Response, error) { called = true; return nil, nil }); !errors.Is(err, ErrClosed) || called {
		t.Errorf("with a closed source: error %v, next called %v; want ErrClosed and no call", err, called)
	}
	if st := w.api.APICalls(); st.OK != 2 || st.Rejected != 0 {
		t.Errorf("the API saw %d good calls and %d rejected (%v), want 2 and 0", st.OK, st.Rejected, st.Reasons)
	}
}
