// Package token obtains access tokens from a token endpoint, for every grant blauth uses:
// client credentials (a service account), refresh (a bl login session) and the device flow
// (blauth-helper login). Two dialects implement Client: Blaxel's JSON one (Blaxel), which every
// Blaxel SDK speaks, and RFC 6749's form-encoded one through golang.org/x/oauth2 (OAuth2), for
// standard OAuth servers. Both return the one Token type and the one Error type.
package token

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/blauth/blauth/ipc"
)

// Token is what a token endpoint gave: an access token, perhaps a rotated refresh token, when
// the issuer says it was issued and expires (its clock), and when the answer came (ours).
type Token struct {
	AccessToken  string
	RefreshToken string // empty when the endpoint did not send one
	ExpiresIn    int    // seconds, as the endpoint said
	// IssuedAt and Expiry are the JWT's iat and exp, on the issuer's clock. Without a usable iat,
	// IssuedAt is exp less expires_in, else the answer's Date, else the moment of receipt. An
	// opaque token carries no times of its issuer: both are local, receipt and receipt plus
	// expires_in.
	IssuedAt time.Time
	Expiry   time.Time
	// Sent and Received are when the request left and its answer arrived, on the local clock.
	Sent, Received time.Time
	// Date is the answer's Date header: the endpoint's clock (zero when it sent none).
	Date time.Time

	issuerIat, issuerExp bool // IssuedAt, Expiry are on the issuer's clock
}

// Lifetime is how long the token lives from issue to expiry: exp − iat, or expires_in.
func (t *Token) Lifetime() time.Duration { return t.Expiry.Sub(t.IssuedAt) }

// SkewTolerance is how far the local clock may be from the issuer's without being corrected
// for (or reported): a measurement is off by the exchange's own duration (at most its 20 s
// timeout) and by the second that the Date header and the JWT claims are rounded to.
const SkewTolerance = 30 * time.Second

// Skew is how far the local clock was ahead of the endpoint's (negative: behind) when the
// answer came: receipt less the answer's Date header, else less the token's iat (which
// includes the token's age), each taken at the middle of the whole second it names. ok is
// false when the answer carried neither.
func (t *Token) Skew() (d time.Duration, ok bool) {
	const mid = 500 * time.Millisecond
	switch {
	case !t.Date.IsZero():
		return t.Received.Sub(t.Date) - mid, true
	case t.issuerIat:
		return t.Received.Sub(t.IssuedAt) - mid, true
	}
	return 0, false
}

// LocalExpiry is when the token expires on the local clock, as the issuer will judge it: the
// earlier of receipt plus the lifetime, and exp moved onto the local clock by the skew (a skew
// within SkewTolerance counts as none, so that with agreeing clocks it is exp itself). The
// correction by a Date header takes the earliest local time the header can stand for (the
// request's departure, less the second it is rounded to), so it is never late; receipt plus
// the lifetime may be late by the exchange's duration plus a second, which the daemon's
// min_ttl covers.
func (t *Token) LocalExpiry() time.Time {
	e := t.Received.Add(t.Lifetime())
	if !t.issuerExp {
		return e
	}
	skew, ok := t.Skew()
	if !ok || skew.Abs() <= SkewTolerance {
		return earlier(e, t.Expiry)
	}
	if t.Date.IsZero() {
		return earlier(e, t.Expiry.Add(skew))
	}
	sent := t.Sent
	if sent.IsZero() || sent.After(t.Received) {
		sent = t.Received
	}
	return earlier(e, t.Expiry.Add(sent.Sub(t.Date)-time.Second))
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// DeviceAuth is the start of a device login (RFC 8628): what to show the user, and how to poll.
type DeviceAuth struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"` // seconds the device code lives
	Interval                int    `json:"interval"`   // seconds between polls
}

// Client obtains tokens from the token endpoint of an API base (…/v0). Implementations are
// safe for concurrent use.
type Client interface {
	// ClientCredentials runs the client-credentials grant. clientCredentials is
	// BL_CLIENT_CREDENTIALS: base64 of "id:secret", or the raw "id:secret".
	ClientCredentials(ctx context.Context, baseURL, clientCredentials string) (*Token, error)
	// Refresh runs the refresh-token grant for a bl login session.
	Refresh(ctx context.Context, baseURL, refreshToken, deviceCode string) (*Token, error)
	// DeviceAuth starts a device login.
	DeviceAuth(ctx context.Context, baseURL string) (*DeviceAuth, error)
	// DeviceToken polls once for the device login's token: an *Error with Code
	// "authorization_pending" or "slow_down" means not yet.
	DeviceToken(ctx context.Context, baseURL string, da *DeviceAuth) (*Token, error)
}

// Error is a failed request to a token endpoint, classified for the retry logic. Its message
// never holds a secret: only the status, the endpoint's RFC 6749 error code and its description.
type Error struct {
	Op          string // "client credentials", "refresh", "device login", "discovery"
	Status      int    // HTTP status, 0 when no answer came
	Code        string // RFC 6749 error code, when the endpoint sent one
	Description string
	Permanent   bool          // retrying the same credential cannot help
	RetryAfter  time.Duration // from a Retry-After header
	Err         error         // the transport error, when there was no answer
}

func (e *Error) Error() string {
	s := e.Op + " exchange failed"
	if e.Status != 0 {
		s += ": HTTP " + strconv.Itoa(e.Status)
	}
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Description != "" {
		s += " (" + e.Description + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a refusal that retrying the same credential cannot fix.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

// permanentCodes are RFC 6749 error codes that retrying cannot fix.
var permanentCodes = map[string]bool{
	"invalid_grant": true, "invalid_client": true, "unauthorized_client": true,
	"unsupported_grant_type": true, "invalid_scope": true, "access_denied": true, "expired_token": true,
}

// Device-flow error codes that mean "poll again" (RFC 8628 §3.5).
const (
	CodeAuthorizationPending = "authorization_pending"
	CodeSlowDown             = "slow_down"
)

// classify builds the error for a non-2xx answer or an unusable 2xx body.
func classify(op string, status int, header http.Header, body []byte, now time.Time) *Error {
	e := &Error{Op: op, Status: status}
	var oe struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &oe) == nil && rfc6749Code.MatchString(oe.Error) {
		e.Code = oe.Error
		e.Description = ipc.Clip(oe.Description, 200)
	}
	switch {
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
		e.RetryAfter = retryAfter(header.Get("Retry-After"), now)
	case e.Code == CodeAuthorizationPending || e.Code == CodeSlowDown:
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

// rfc6749Code is the shape of an RFC 6749 error code, and bounds its length.
var rfc6749Code = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

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

// parseExpiresIn accepts a number or a numeric string, as servers differ.
func parseExpiresIn(raw json.RawMessage) int {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0
	}
	return int(f)
}

// setTimes records when the request left (sent) and its answer came (received, with the
// answer's Date header, zero when none), and takes the expiry from the JWT's exp (and iat)
// claims; an opaque token's comes from expires_in, on the local clock.
func (t *Token) setTimes(sent, received, date time.Time) error {
	t.Sent, t.Received, t.Date = sent, received, date
	if exp, iat, ok := JWTTimes(t.AccessToken); ok {
		t.Expiry, t.IssuedAt = exp, iat
		t.issuerExp, t.issuerIat = true, true
		if iat.IsZero() || !iat.Before(exp) {
			switch {
			case t.ExpiresIn > 0:
				t.IssuedAt = exp.Add(-time.Duration(t.ExpiresIn) * time.Second)
			case !date.IsZero():
				t.IssuedAt = date // its life is what is left of it when it was answered
			default:
				t.IssuedAt, t.issuerIat = received, false
			}
		}
		return nil
	}
	if t.ExpiresIn <= 0 {
		return errors.New("the token is not a JWT and the answer has no expires_in")
	}
	t.IssuedAt = received
	t.Expiry = received.Add(time.Duration(t.ExpiresIn) * time.Second)
	return nil
}

// answerDate reads an answer's Date header; zero when there is none that parses.
func answerDate(h http.Header) time.Time {
	d, _ := http.ParseTime(h.Get("Date")) // the zero time when it fails
	return d
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

// BasicValue turns BL_CLIENT_CREDENTIALS into the value of a Basic Authorization header. Blaxel
// carries it already base64-encoded; the Go SDK also accepts the raw "id:secret", which is
// encoded here.
func BasicValue(cc string) string {
	cc = strings.TrimSpace(cc)
	if raw, encoded := decodeClientCredentials(cc); !encoded && strings.IndexByte(raw, ':') > 0 {
		return base64.StdEncoding.EncodeToString([]byte(raw))
	}
	return cc
}

// SplitClientCredentials returns the client id and secret inside BL_CLIENT_CREDENTIALS.
func SplitClientCredentials(cc string) (id, secret string, ok bool) {
	raw, _ := decodeClientCredentials(strings.TrimSpace(cc))
	id, secret, ok = strings.Cut(raw, ":")
	return id, secret, ok && id != ""
}

// decodeClientCredentials returns the "id:secret" that cc carries, and whether cc carried it
// base64-encoded (the form Blaxel gives); otherwise cc is returned as it is.
func decodeClientCredentials(cc string) (raw string, encoded bool) {
	if dec, err := base64.StdEncoding.DecodeString(cc); err == nil && bytes.IndexByte(dec, ':') > 0 {
		return string(dec), true
	}
	return cc, false
}

// transportError keeps the cause of a failed HTTP request but not its URL's query or user info.
func transportError(op string, err error) *Error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return &Error{Op: op, Err: fmt.Errorf("timed out: %w", context.DeadlineExceeded)}
			}
			return &Error{Op: op, Err: inner}
		}
	}
	return &Error{Op: op, Err: err}
}

// WithUserAgent returns a copy of hc that names its caller in the User-Agent of every request,
// so that a token endpoint's logs (and the test fakes) tell blauthd's requests from an SDK's.
func WithUserAgent(hc *http.Client, ua string) *http.Client {
	c := *hc
	c.Transport = userAgentTransport{base: cmp.Or(c.Transport, http.DefaultTransport), ua: ua}
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
