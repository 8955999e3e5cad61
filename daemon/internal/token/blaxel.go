package token

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Blaxel speaks Blaxel's JSON dialect of the token endpoint ({base}/oauth/token and
// {base}/login/device), as the Go, Python and TypeScript SDKs do. The zero value uses
// http.DefaultClient and the wall clock.
type Blaxel struct {
	HTTP *http.Client
	Now  func() time.Time
}

// maxAnswer bounds how much of an answer is read.
const maxAnswer = 1 << 20

// clientID is what Blaxel's SDKs send as client_id.
const clientID = "blaxel"

// clockNow is now(), or the wall clock's time without its monotonic reading when now is nil.
func clockNow(now func() time.Time) time.Time {
	if now != nil {
		return now()
	}
	return time.Now().Round(0)
}

// ClientCredentials implements Client.
func (x *Blaxel) ClientCredentials(ctx context.Context, baseURL, cc string) (*Token, error) {
	body := map[string]string{"grant_type": "client_credentials"}
	return x.token(ctx, "client credentials", baseURL, "Basic "+BasicValue(cc), body)
}

// Refresh implements Client.
func (x *Blaxel) Refresh(ctx context.Context, baseURL, refreshToken, deviceCode string) (*Token, error) {
	body := map[string]string{"grant_type": "refresh_token", "refresh_token": refreshToken, "client_id": clientID}
	if deviceCode != "" {
		body["device_code"] = deviceCode
	}
	return x.token(ctx, "refresh", baseURL, "", body)
}

// DeviceAuth implements Client: POST {base}/login/device.
func (x *Blaxel) DeviceAuth(ctx context.Context, baseURL string) (*DeviceAuth, error) {
	const op = "device login"
	var da DeviceAuth
	a, err := x.post(ctx, op, endpoint(baseURL, "/login/device"), "", map[string]string{"client_id": clientID, "scope": "offline_access"}, &da)
	if err != nil {
		return nil, err
	}
	if da.DeviceCode == "" {
		return nil, &Error{Op: op, Status: a.status, Description: "the answer holds no device_code"}
	}
	return &da, nil
}

// DeviceToken implements Client. Blaxel answers a pending login with HTTP 202, or with 400 and
// authorization_pending, as RFC 8628 does.
func (x *Blaxel) DeviceToken(ctx context.Context, baseURL string, da *DeviceAuth) (*Token, error) {
	body := map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": clientID, "device_code": da.DeviceCode}
	return x.token(ctx, "device login", baseURL, "", body)
}

func endpoint(baseURL, path string) string { return strings.TrimRight(baseURL, "/") + path }

// tokenAnswer is the body of a token endpoint's success.
type tokenAnswer struct {
	AccessToken  string          `json:"access_token"`
	RefreshToken string          `json:"refresh_token"`
	ExpiresIn    json.RawMessage `json:"expires_in"`
}

// token posts one grant to {base}/oauth/token and reads the token.
func (x *Blaxel) token(ctx context.Context, op, baseURL, auth string, body map[string]string) (*Token, error) {
	var ta tokenAnswer
	a, err := x.post(ctx, op, endpoint(baseURL, "/oauth/token"), auth, body, &ta)
	if err != nil {
		return nil, err
	}
	if a.status == http.StatusAccepted {
		return nil, &Error{Op: op, Status: a.status, Code: CodeAuthorizationPending}
	}
	if ta.AccessToken == "" {
		return nil, &Error{Op: op, Status: a.status, Description: "the answer is not a token response"}
	}
	t := &Token{AccessToken: ta.AccessToken, RefreshToken: ta.RefreshToken, ExpiresIn: parseExpiresIn(ta.ExpiresIn)}
	if err := t.setTimes(a.sent, a.received, a.date); err != nil {
		return nil, &Error{Op: op, Status: a.status, Description: err.Error()}
	}
	return t, nil
}

// answer is what post saw of an answer besides its body: its status and Date header, and
// when the request left and the answer came on the local clock.
type answer struct {
	status         int
	date           time.Time
	sent, received time.Time
}

// post sends body as JSON to url and decodes a 2xx answer into out; any other answer is a
// classified *Error. At most maxAnswer bytes of the answer are read.
func (x *Blaxel) post(ctx context.Context, op, url, auth string, body any, out any) (answer, error) {
	var a answer
	if err := CheckURL(url); err != nil {
		return a, &Error{Op: op, Permanent: true, Err: fmt.Errorf("the API base URL (BL_API_URL) is %w", err)}
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		// Not the parse error: it quotes the URL.
		return a, &Error{Op: op, Permanent: true, Err: fmt.Errorf("the API base URL (BL_API_URL) is %w", ErrBadURL)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	a.sent = clockNow(x.Now)
	resp, err := cmp.Or(x.HTTP, http.DefaultClient).Do(req)
	if err != nil {
		return a, transportError(op, err)
	}
	defer resp.Body.Close()
	a.status, a.date = resp.StatusCode, answerDate(resp.Header)
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	a.received = clockNow(x.Now)
	if err != nil {
		return a, &Error{Op: op, Status: resp.StatusCode, Err: err}
	}
	if resp.StatusCode/100 != 2 {
		return a, classify(op, resp.StatusCode, resp.Header, data, a.received)
	}
	if resp.StatusCode == http.StatusAccepted {
		return a, nil // "not yet": nothing to decode
	}
	if err := json.Unmarshal(data, out); err != nil {
		e := classify(op, resp.StatusCode, resp.Header, data, a.received)
		e.Description = "the answer is not JSON"
		return a, e
	}
	return a, nil
}
