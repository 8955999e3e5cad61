package blauth

import (
	"context"
	"net/http"

	"golang.org/x/oauth2"
)

// Blaxel's request headers.
const (
	HeaderAuthorization = "X-Blaxel-Authorization" // Bearer <token>
	HeaderWorkspace     = "X-Blaxel-Workspace"     // the workspace name
)

// Transport is an http.RoundTripper that authenticates every request for Blaxel's API: it asks
// Source for a token each time (a TokenSource answers from memory) and sets
// X-Blaxel-Authorization: Bearer <token> and X-Blaxel-Workspace: <the token's workspace>
// (TokenWorkspace; not set for a token without one) on a copy of the request.
//
// Give it only to clients that talk to Blaxel: every request it carries gets the token.
// It is safe for concurrent use when Source and Base are.
type Transport struct {
	// Source gives the tokens; a *TokenSource, or anything whose tokens carry a workspace.
	Source oauth2.TokenSource
	// Base does the request; nil means http.DefaultTransport.
	Base http.RoundTripper
}

// RoundTrip authenticates a copy of req and sends it with Base. When Source fails, it returns
// that error and closes req's body, as a RoundTripper must.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	r, err := authorize(req, t.Source)
	if err != nil {
		return nil, err
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// authorize returns a copy of req with Blaxel's two headers from src's current token. When src
// fails, it closes req's body and returns the error.
func authorize(req *http.Request, src oauth2.TokenSource) (*http.Request, error) {
	tok, err := src.Token()
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set(HeaderAuthorization, "Bearer "+tok.AccessToken)
	if ws := TokenWorkspace(tok); ws != "" {
		r.Header.Set(HeaderWorkspace, ws)
	} else {
		r.Header.Del(HeaderWorkspace)
	}
	return r, nil
}

// Middleware returns a request middleware of the shape the Blaxel Go SDK's
// option.WithMiddleware takes (its option.Middleware, func(*http.Request,
// option.MiddlewareNext) (*http.Response, error), where option.MiddlewareNext is
// func(*http.Request) (*http.Response, error)), without this package importing the SDK:
//
//	client := blaxel.NewClient(option.WithMiddleware(blauth.Middleware(ts)))
//
// Each request gets X-Blaxel-Authorization and X-Blaxel-Workspace from src as with Transport,
// on a copy, before next sends it. The SDK runs its middlewares after its own authentication, so
// these headers replace the ones of a token it fetched itself; they do not stop it fetching one
// when BL_API_KEY or BL_CLIENT_CREDENTIALS is in its environment (docs/CLIENTS.md). When src
// fails, the middleware returns that error and next is not called.
func Middleware(src oauth2.TokenSource) func(*http.Request, func(*http.Request) (*http.Response, error)) (*http.Response, error) {
	return func(req *http.Request, next func(*http.Request) (*http.Response, error)) (*http.Response, error) {
		r, err := authorize(req, src)
		if err != nil {
			return nil, err
		}
		return next(r)
	}
}

// NewClient returns an HTTP client whose requests carry Blaxel's two headers from src (see
// Transport). Like oauth2.NewClient, it builds on the *http.Client stored in ctx under
// oauth2.HTTPClient, if any; ctx is used for nothing else.
func NewClient(ctx context.Context, src oauth2.TokenSource) *http.Client {
	var base http.RoundTripper
	if hc, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok && hc != nil {
		base = hc.Transport
	}
	return &http.Client{Transport: &Transport{Source: src, Base: base}}
}
