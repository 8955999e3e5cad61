package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// OAuth2Exchanger talks RFC 6749 (form-encoded bodies) to a standard OAuth 2.0 server through
// golang.org/x/oauth2: for users whose Blaxel access goes through their own identity provider.
// The token URL is TokenURL, else the token_endpoint of Issuer's OIDC metadata, else
// {base}/oauth/token. Safe for concurrent use.
type OAuth2Exchanger struct {
	TokenURL string
	Issuer   string
	// AuthStyle is how the client authenticates: oauth2.AuthStyleInHeader (client_secret_basic),
	// oauth2.AuthStyleInParams (client_secret_post), or AutoDetect.
	AuthStyle oauth2.AuthStyle
	// ClientID and ClientSecret authenticate refresh-token grants ("blaxel" and none when empty).
	ClientID, ClientSecret string
	Scopes                 []string
	HTTP                   *http.Client
	Now                    func() time.Time

	mu         sync.Mutex
	discovered string
}

func (x *OAuth2Exchanger) now() time.Time {
	if x.Now != nil {
		return x.Now()
	}
	return time.Now().Round(0)
}

func (x *OAuth2Exchanger) ctx(ctx context.Context) context.Context {
	if x.HTTP != nil {
		return context.WithValue(ctx, oauth2.HTTPClient, x.HTTP)
	}
	return ctx
}

// tokenURL resolves the endpoint, discovering it once from the issuer's metadata.
func (x *OAuth2Exchanger) tokenURL(ctx context.Context, base string) (string, error) {
	if x.TokenURL != "" {
		return x.TokenURL, nil
	}
	if x.Issuer == "" {
		return strings.TrimRight(base, "/") + "/oauth/token", nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.discovered != "" {
		return x.discovered, nil
	}
	u := strings.TrimRight(x.Issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", &ExchangeError{Op: "discovery", Permanent: true, Err: err}
	}
	hc := x.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", &ExchangeError{Op: "discovery", Err: scrubURLError(err)}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var meta struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &meta) != nil || meta.TokenEndpoint == "" {
		return "", &ExchangeError{Op: "discovery", Status: resp.StatusCode, Description: "no token_endpoint in " + u}
	}
	x.discovered = meta.TokenEndpoint
	return x.discovered, nil
}

// ClientCredentials implements Exchanger with the form-encoded client-credentials grant.
func (x *OAuth2Exchanger) ClientCredentials(ctx context.Context, base, cc string) (*Grant, error) {
	const op = "client credentials"
	id, secret, ok := SplitClientCredentials(cc)
	if !ok {
		return nil, &ExchangeError{Op: op, Permanent: true, Description: "BL_CLIENT_CREDENTIALS is not base64 of id:secret nor id:secret"}
	}
	u, err := x.tokenURL(ctx, base)
	if err != nil {
		return nil, err
	}
	conf := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: u, Scopes: x.Scopes, AuthStyle: x.AuthStyle}
	tok, err := conf.Token(x.ctx(ctx))
	return x.grant(op, tok, err)
}

// Refresh implements Exchanger with the form-encoded refresh-token grant.
func (x *OAuth2Exchanger) Refresh(ctx context.Context, base, refreshToken, _ string) (*Grant, error) {
	const op = "refresh"
	u, err := x.tokenURL(ctx, base)
	if err != nil {
		return nil, err
	}
	id := x.ClientID
	if id == "" {
		id = "blaxel"
	}
	conf := oauth2.Config{ClientID: id, ClientSecret: x.ClientSecret, Endpoint: oauth2.Endpoint{TokenURL: u, AuthStyle: x.AuthStyle}}
	// An expired token forces the TokenSource to refresh at once.
	tok, err := conf.TokenSource(x.ctx(ctx), &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)}).Token()
	return x.grant(op, tok, err)
}

func (x *OAuth2Exchanger) grant(op string, tok *oauth2.Token, err error) (*Grant, error) {
	now := x.now()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			return nil, classify(op, re.Response.StatusCode, re.Response.Header, re.Body, now)
		}
		if errors.As(err, &re) {
			return nil, &ExchangeError{Op: op, Description: "the answer is not a token response"}
		}
		return nil, &ExchangeError{Op: op, Err: scrubURLError(err)}
	}
	g := &Grant{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresIn: int(tok.ExpiresIn)}
	if g.ExpiresIn == 0 && !tok.Expiry.IsZero() {
		g.ExpiresIn = int(time.Until(tok.Expiry).Round(time.Second).Seconds())
	}
	if err := g.setExpiry(now); err != nil {
		return nil, &ExchangeError{Op: op, Description: fmt.Sprint(err)}
	}
	return g, nil
}
