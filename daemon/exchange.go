package daemon

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Grant is what a token endpoint gave: an access token, perhaps a rotated refresh token, and
// when the access token expires.
type Grant struct {
	AccessToken  string
	RefreshToken string // empty when the endpoint did not send one
	ExpiresIn    int    // seconds, as the endpoint said
	IssuedAt     time.Time
	Expiry       time.Time
}

// Lifetime is how long the token lives from issue to expiry.
func (g *Grant) Lifetime() time.Duration { return g.Expiry.Sub(g.IssuedAt) }

// Exchanger obtains tokens from a token endpoint. Implementations are safe for concurrent use.
type Exchanger interface {
	// ClientCredentials runs the client-credentials grant. clientCredentials is
	// BL_CLIENT_CREDENTIALS: base64 of "id:secret", or the raw "id:secret".
	ClientCredentials(ctx context.Context, baseURL, clientCredentials string) (*Grant, error)
	// Refresh runs the refresh-token grant for a bl login session.
	Refresh(ctx context.Context, baseURL, refreshToken, deviceCode string) (*Grant, error)
}

// ExchangeError is a failed exchange, classified for the retry logic. Its message never holds a
// secret: only the status, the endpoint's error code and its description.
type ExchangeError struct {
	Op          string // "client credentials" or "refresh"
	Status      int    // HTTP status, 0 when no answer came
	Code        string // RFC 6749 error code, when the endpoint sent one
	Description string
	Permanent   bool          // retrying the same credential cannot help
	RetryAfter  time.Duration // from a Retry-After header
	Err         error         // the transport error, when there was no answer
}

func (e *ExchangeError) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	b.WriteString(" exchange failed")
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		b.WriteString(" (")
		b.WriteString(e.Description)
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *ExchangeError) Unwrap() error { return e.Err }

// permanentCodes are RFC 6749 error codes that retrying cannot fix.
var permanentCodes = map[string]bool{
	"invalid_grant": true, "invalid_client": true, "unauthorized_client": true,
	"unsupported_grant_type": true, "invalid_scope": true, "access_denied": true, "expired_token": true,
}

// classify builds the error for a non-2xx answer or an unusable 2xx body.
func classify(op string, status int, header http.Header, body []byte, now time.Time) *ExchangeError {
	e := &ExchangeError{Op: op, Status: status}
	var oe struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &oe) == nil && isToken(oe.Error) {
		e.Code = oe.Error
		e.Description = clip(oe.Description, 200)
	}
	switch {
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
		e.RetryAfter = retryAfter(header.Get("Retry-After"), now)
	case permanentCodes[e.Code]:
		e.Permanent = true
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.Permanent = true
	case status >= 400 && e.Code != "":
		// invalid_request and friends: our request is wrong for this server; retrying won't help.
		e.Permanent = true
	default:
		// A 4xx without an OAuth error body (a proxy's HTML page, a 404 from a wrong URL) or a
		// 2xx that is not a token: treat as transient, it is usually an outage in front of the API.
	}
	return e
}

func isToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c == '-' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// BlaxelExchanger speaks Blaxel's JSON dialect of the token endpoint ({base}/oauth/token), as
// the Go, Python and TypeScript SDKs do. The zero value uses http.DefaultClient and time.Now.
type BlaxelExchanger struct {
	HTTP *http.Client
	Now  func() time.Time
	// MaxBody bounds how much of an answer is read.
	MaxBody int64
}

func (x *BlaxelExchanger) now() time.Time {
	if x.Now != nil {
		return x.Now()
	}
	return time.Now().Round(0)
}

// ClientCredentials implements Exchanger.
func (x *BlaxelExchanger) ClientCredentials(ctx context.Context, baseURL, cc string) (*Grant, error) {
	body := map[string]string{"grant_type": "client_credentials"}
	return x.post(ctx, "client credentials", baseURL, "Basic "+BasicValue(cc), body)
}

// Refresh implements Exchanger.
func (x *BlaxelExchanger) Refresh(ctx context.Context, baseURL, refreshToken, deviceCode string) (*Grant, error) {
	body := map[string]string{"grant_type": "refresh_token", "refresh_token": refreshToken, "client_id": "blaxel"}
	if deviceCode != "" {
		body["device_code"] = deviceCode
	}
	return x.post(ctx, "refresh", baseURL, "", body)
}

// BasicValue turns BL_CLIENT_CREDENTIALS into the value of a Basic Authorization header. Blaxel
// carries it already base64-encoded; the Go SDK also accepts the raw "id:secret", which is
// encoded here.
func BasicValue(cc string) string {
	cc = strings.TrimSpace(cc)
	if dec, err := base64.StdEncoding.DecodeString(cc); err == nil && bytes.IndexByte(dec, ':') > 0 {
		return cc
	}
	if strings.IndexByte(cc, ':') > 0 {
		return base64.StdEncoding.EncodeToString([]byte(cc))
	}
	return cc
}

// SplitClientCredentials returns the client id and secret inside BL_CLIENT_CREDENTIALS.
func SplitClientCredentials(cc string) (id, secret string, ok bool) {
	cc = strings.TrimSpace(cc)
	raw := cc
	if dec, err := base64.StdEncoding.DecodeString(cc); err == nil && bytes.IndexByte(dec, ':') > 0 {
		raw = string(dec)
	}
	id, secret, ok = strings.Cut(raw, ":")
	return id, secret, ok && id != ""
}

func (x *BlaxelExchanger) post(ctx context.Context, op, baseURL, auth string, body map[string]string) (*Grant, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(baseURL, "/")+"/oauth/token", bytes.NewReader(b))
	if err != nil {
		return nil, &ExchangeError{Op: op, Permanent: true, Err: fmt.Errorf("bad API base URL: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	hc := x.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, &ExchangeError{Op: op, Err: scrubURLError(err)}
	}
	defer resp.Body.Close()
	limit := x.MaxBody
	if limit <= 0 {
		limit = 1 << 20
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, &ExchangeError{Op: op, Status: resp.StatusCode, Err: err}
	}
	now := x.now()
	if resp.StatusCode/100 != 2 {
		return nil, classify(op, resp.StatusCode, resp.Header, data, now)
	}
	var tr struct {
		AccessToken  string          `json:"access_token"`
		RefreshToken string          `json:"refresh_token"`
		ExpiresIn    json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(data, &tr); err != nil || tr.AccessToken == "" {
		e := classify(op, resp.StatusCode, resp.Header, data, now)
		e.Description = "the answer is not a token response"
		return nil, e
	}
	g := &Grant{AccessToken: tr.AccessToken, RefreshToken: tr.RefreshToken, ExpiresIn: parseExpiresIn(tr.ExpiresIn)}
	if err := g.setExpiry(now); err != nil {
		return nil, &ExchangeError{Op: op, Status: resp.StatusCode, Description: err.Error()}
	}
	return g, nil
}

// parseExpiresIn accepts a number or a numeric string, as servers differ.
func parseExpiresIn(raw json.RawMessage) int {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0
	}
	return int(f)
}

// setExpiry takes the expiry from the JWT's exp (and iat) claims; for an opaque token it falls
// back to expires_in.
func (g *Grant) setExpiry(now time.Time) error {
	if exp, iat, ok := JWTTimes(g.AccessToken); ok {
		g.Expiry = exp
		g.IssuedAt = iat
		if iat.IsZero() || !iat.Before(exp) {
			g.IssuedAt = now
			if g.ExpiresIn > 0 {
				g.IssuedAt = exp.Add(-time.Duration(g.ExpiresIn) * time.Second)
			}
		}
		return nil
	}
	if g.ExpiresIn <= 0 {
		return errors.New("the token is not a JWT and the answer has no expires_in")
	}
	g.IssuedAt = now
	g.Expiry = now.Add(time.Duration(g.ExpiresIn) * time.Second)
	return nil
}

// JWTTimes reads the exp and iat claims of a JWT without verifying it (the daemon only needs to
// know when to refresh; the API verifies the token). ok is false when tok is not a JWT with exp.
func JWTTimes(tok string) (exp, iat time.Time, ok bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return exp, iat, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return exp, iat, false
	}
	var c struct {
		Exp json.Number `json:"exp"`
		Iat json.Number `json:"iat"`
	}
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	if d.Decode(&c) != nil || c.Exp == "" {
		return exp, iat, false
	}
	e, err := c.Exp.Float64()
	if err != nil || e <= 0 {
		return exp, iat, false
	}
	exp = time.Unix(int64(e), 0)
	if i, err := c.Iat.Float64(); err == nil && i > 0 {
		iat = time.Unix(int64(i), 0)
	}
	return exp, iat, true
}

// scrubURLError keeps the transport cause of a *url.Error but not the URL's query or user info.
func scrubURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("timed out: %w", context.DeadlineExceeded)
			}
			return inner
		}
	}
	return err
}

// withUserAgent returns a copy of hc that names blauthd in the User-Agent of every request, so
// that a token endpoint's logs (and the test fakes) tell the daemon's exchanges from an SDK's.
func withUserAgent(hc *http.Client, ua string) *http.Client {
	c := *hc
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = userAgentTransport{base: base, ua: ua}
	return &c
}

type userAgentTransport struct {
	base http.RoundTripper
	ua   string
}

func (t userAgentTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", t.ua)
	return t.base.RoundTrip(r)
}
