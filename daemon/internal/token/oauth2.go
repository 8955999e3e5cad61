package token

import (
	"cmp"
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

// OAuth2 talks RFC 6749 (form-encoded bodies) to a standard OAuth 2.0 server through
// golang.org/x/oauth2: for users whose Blaxel access goes through their own identity provider.
// The token URL is TokenURL, else the token_endpoint of Issuer's OIDC metadata, else
// {base}/oauth/token. The device login is Blaxel's (bl's). Safe for concurrent use.
type OAuth2 struct {
	TokenURL string
	Issuer   string
	// AuthStyle is how the client authenticates: oauth2.AuthStyleInHeader (client_secret_basic),
	// oauth2.AuthStyleInParams (client_secret_post), or AutoDetect.
	AuthStyle oauth2.AuthStyle
	// ClientID and ClientSecret authenticate refresh-token grants ("blaxel" and none when empty).
	ClientID, ClientSecret string
	HTTP                   *http.Client
	Now                    func() time.Time

	mu   sync.Mutex
	meta *providerMetadata // discovered once
}

type providerMetadata struct {
	TokenEndpoint string `json:"token_endpoint"`
}

// exchange carries the HTTP client to x/oauth2, which reads it from the context, wrapped so
// that the answer's Date header, which x/oauth2 does not return, is kept in the exchange.
func (x *OAuth2) exchange(ctx context.Context) (context.Context, *exchange) {
	c := *cmp.Or(x.HTTP, http.DefaultClient)
	ex := &exchange{base: cmp.Or(c.Transport, http.DefaultTransport)}
	c.Transport = ex
	ex.sent = clockNow(x.Now)
	return context.WithValue(ctx, oauth2.HTTPClient, &c), ex
}

// exchange is one grant's round trip: when it left, and the Date of its answer. x/oauth2 makes
// its requests one after the other, each inside the Token call, and date is read after Token
// returns, so no lock is needed.
type exchange struct {
	base http.RoundTripper
	sent time.Time
	date time.Time
}

func (ex *exchange) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := ex.base.RoundTrip(r)
	if err == nil {
		ex.date = answerDate(resp.Header)
	}
	return resp, err
}

func (x *OAuth2) clientID() string { return cmp.Or(x.ClientID, clientID) }

// discover reads the issuer's OIDC metadata once.
func (x *OAuth2) discover(ctx context.Context) (*providerMetadata, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.meta != nil {
		return x.meta, nil
	}
	const op = "discovery"
	u := strings.TrimRight(x.Issuer, "/") + "/.well-known/openid-configuration"
	if err := CheckURL(u); err != nil {
		return nil, &Error{Op: op, Permanent: true, Err: fmt.Errorf("the OIDC issuer is %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, &Error{Op: op, Permanent: true, Err: fmt.Errorf("the OIDC issuer is %w", ErrBadURL)}
	}
	resp, err := cmp.Or(x.HTTP, http.DefaultClient).Do(req)
	if err != nil {
		return nil, transportError(op, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	var meta providerMetadata
	if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &meta) != nil || meta.TokenEndpoint == "" {
		return nil, &Error{Op: op, Status: resp.StatusCode, Description: "no token_endpoint in " + RedactURL(u)}
	}
	x.meta = &meta
	return x.meta, nil
}

// endpoint resolves the token endpoint for base.
func (x *OAuth2) endpoint(ctx context.Context, base string) (oauth2.Endpoint, error) {
	ep := oauth2.Endpoint{TokenURL: x.TokenURL, AuthStyle: x.AuthStyle}
	if x.Issuer != "" {
		meta, err := x.discover(ctx)
		if err != nil {
			return ep, err
		}
		if ep.TokenURL == "" {
			ep.TokenURL = meta.TokenEndpoint
		}
	}
	what := "the token endpoint (--token-url, or the issuer's)"
	if ep.TokenURL == "" {
		ep.TokenURL, what = endpoint(base, "/oauth/token"), "the API base URL (BL_API_URL)"
	}
	if err := CheckURL(ep.TokenURL); err != nil {
		return ep, &Error{Op: "token endpoint", Permanent: true, Err: fmt.Errorf("%s is %w", what, err)}
	}
	return ep, nil
}

// ClientCredentials implements Client with the form-encoded client-credentials grant.
func (x *OAuth2) ClientCredentials(ctx context.Context, base, cc string) (*Token, error) {
	const op = "client credentials"
	id, secret, ok := SplitClientCredentials(cc)
	if !ok {
		return nil, &Error{Op: op, Permanent: true, Description: "BL_CLIENT_CREDENTIALS is not base64 of id:secret nor id:secret"}
	}
	ep, err := x.endpoint(ctx, base)
	if err != nil {
		return nil, err
	}
	conf := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: ep.TokenURL, AuthStyle: x.AuthStyle}
	ctx, ex := x.exchange(ctx)
	tok, err := conf.Token(ctx)
	return x.result(op, ex, tok, err)
}

// Refresh implements Client with the form-encoded refresh-token grant.
func (x *OAuth2) Refresh(ctx context.Context, base, refreshToken, _ string) (*Token, error) {
	const op = "refresh"
	ep, err := x.endpoint(ctx, base)
	if err != nil {
		return nil, err
	}
	conf := oauth2.Config{ClientID: x.clientID(), ClientSecret: x.ClientSecret, Endpoint: ep}
	// A token that holds only a refresh token is not valid, so its source refreshes it at once.
	ctx, ex := x.exchange(ctx)
	tok, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	return x.result(op, ex, tok, err)
}

// DeviceAuth implements Client with Blaxel's device login at {base}/login/device: the login
// that bl performs, whatever endpoint the refresh and client-credentials grants use.
func (x *OAuth2) DeviceAuth(ctx context.Context, base string) (*DeviceAuth, error) {
	return x.blaxel().DeviceAuth(ctx, base)
}

// DeviceToken implements Client with Blaxel's device login, as DeviceAuth.
func (x *OAuth2) DeviceToken(ctx context.Context, base string, da *DeviceAuth) (*Token, error) {
	return x.blaxel().DeviceToken(ctx, base, da)
}

func (x *OAuth2) blaxel() *Blaxel { return &Blaxel{HTTP: x.HTTP, Now: x.Now} }

// result turns what x/oauth2 returned for exchange ex into a Token or a classified *Error.
func (x *OAuth2) result(op string, ex *exchange, tok *oauth2.Token, err error) (*Token, error) {
	now := clockNow(x.Now)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			return nil, classify(op, re.Response.StatusCode, re.Response.Header, re.Body, now)
		}
		if errors.As(err, &re) {
			return nil, &Error{Op: op, Description: "the answer is not a token response"}
		}
		return nil, transportError(op, err)
	}
	t := &Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, ExpiresIn: int(tok.ExpiresIn)}
	if t.ExpiresIn == 0 && !tok.Expiry.IsZero() {
		t.ExpiresIn = int(time.Until(tok.Expiry).Round(time.Second).Seconds())
	}
	if err := t.setTimes(ex.sent, now, ex.date); err != nil {
		return nil, &Error{Op: op, Description: fmt.Sprint(err)}
	}
	return t, nil
}
