//go:build reliability

package reliability

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

// fakeAPI is the fake Blaxel API (internal/testkit/blaxeltest) behind a recording proxy. The daemons
// talk to the proxy (Base), which forwards every request unchanged and notes what went through:
// every access token, refresh token and device code the fake issued (so that the final case
// can search the logs for them, and served tokens can be checked as really issued), and every
// rotation of a refresh token. Hooks let a case act at an exact point of an exchange.
type fakeAPI struct {
	*blaxeltest.Server
	proxy *httptest.Server
	// Base is the API base to put in BL_API_URL.
	Base   string
	client *http.Client

	mu        sync.Mutex
	issued    map[string]issuedToken // access token → how it was issued
	rotations map[string]string      // refresh token → the one that replaced it
	// onRequest runs when a token request arrives, before it is forwarded.
	onRequest func(ex exchange)
	// onAnswer runs when the fake has answered, before the answer is forwarded: a rotation has
	// happened on the server, the daemon does not know it yet.
	onAnswer func(ex exchange)
	// onForwarded runs once the answer has been written to the daemon.
	onForwarded func(ex exchange)
}

type issuedToken struct {
	refresh string // the refresh token issued with it, if any
	at      time.Time
}

// exchange is one token request seen by the proxy.
type exchange struct {
	Grant      string
	OldRefresh string // refresh token sent (refresh grant)
	Status     int    // 0 when the fake gave no answer
	Access     string // access token issued
	NewRefresh string // refresh token issued
}

func newFakeAPI(t *testing.T, ttl time.Duration) *fakeAPI {
	t.Helper()
	a := &fakeAPI{Server: blaxeltest.New(ttl), issued: map[string]issuedToken{}, rotations: map[string]string{},
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: 64}}}
	a.proxy = httptest.NewServer(http.HandlerFunc(a.forward))
	a.Base = a.proxy.URL + "/v0"
	t.Cleanup(func() {
		a.proxy.CloseClientConnections()
		a.proxy.Close()
		a.Server.CloseClientConnections()
		a.Server.Close()
	})
	return a
}

// setHooks replaces the hooks (nil clears them).
func (a *fakeAPI) setHooks(onRequest, onAnswer, onForwarded func(exchange)) {
	a.mu.Lock()
	a.onRequest, a.onAnswer, a.onForwarded = onRequest, onAnswer, onForwarded
	a.mu.Unlock()
}

// addClient registers a service account and records its secrets.
func (a *fakeAPI) addClient(id, secret string) string {
	cc := a.AddClient(id, secret)
	run.secret("client secret", secret)
	run.secret("client id:secret", id+":"+secret)
	run.secret("BL_CLIENT_CREDENTIALS", cc)
	return cc
}

// newSession creates a bl login session and records its secrets.
func (a *fakeAPI) newSession(subject, deviceCode string) (access, refresh string) {
	access, refresh = a.NewSession(subject, deviceCode)
	run.secret("device code", deviceCode)
	run.secret("access token", access)
	run.secret("refresh token", refresh)
	a.mu.Lock()
	a.issued[access] = issuedToken{refresh: refresh, at: time.Now()}
	a.mu.Unlock()
	return access, refresh
}

// expiredToken is an access token for subject that expired ago, issued lifetime before that.
func (a *fakeAPI) expiredToken(subject string, ago, lifetime time.Duration) string {
	tok := a.TokenExpiring(subject, time.Now().Add(-ago), lifetime)
	run.secret("access token", tok)
	return tok
}

// rotatedFrom returns the refresh token that replaced rt, if the fake rotated it.
func (a *fakeAPI) rotatedFrom(rt string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, ok := a.rotations[rt]
	return n, ok
}

// issuedWith returns the refresh token issued with access token tok, and whether the fake issued
// tok at all.
func (a *fakeAPI) issuedWith(tok string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	it, ok := a.issued[tok]
	return it.refresh, ok
}

// checkToken reports why tok, received at now, is not a valid token from the fake: not issued
// by it, or expiring in less than minLeft. expiry is the expiry the daemon announced with it.
func (a *fakeAPI) checkToken(tok string, expiry, now time.Time, minLeft time.Duration) error {
	if _, ok := a.issuedWith(tok); !ok {
		return errors.New("served a token the fake API never issued")
	}
	exp, err := jwtExpiry(tok)
	if err != nil {
		return err
	}
	if !exp.After(now) {
		return fmt.Errorf("served an EXPIRED token: exp %s, received at %s", exp.Format(time.RFC3339), now.Format(time.RFC3339Nano))
	}
	if left := exp.Sub(now); left < minLeft {
		return fmt.Errorf("served a token with %s left, less than %s", left.Round(time.Millisecond), minLeft)
	}
	if !expiry.IsZero() && !expiry.Equal(exp) {
		return fmt.Errorf("announced expiry %d differs from the token's exp %d", expiry.Unix(), exp.Unix())
	}
	return nil
}

// jwtExpiry reads the exp claim of a JWT.
func jwtExpiry(tok string) (time.Time, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, errors.New("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("JWT payload: %w", err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Exp == 0 {
		return time.Time{}, errors.New("JWT without exp")
	}
	return time.Unix(claims.Exp, 0), nil
}

func (a *fakeAPI) hooks() (func(exchange), func(exchange), func(exchange)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.onRequest, a.onAnswer, a.onForwarded
}

// forward relays one request to the fake and its answer back, recording the secrets in both.
// When the fake drops the connection or hangs past the caller's patience, so does the proxy.
func (a *fakeAPI) forward(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "proxy: read body", http.StatusBadRequest)
		return
	}
	var req map[string]string
	_ = json.Unmarshal(body, &req)
	ex := exchange{Grant: req["grant_type"], OldRefresh: req["refresh_token"]}
	run.secret("refresh token", req["refresh_token"])
	run.secret("device code", req["device_code"])
	if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, "Basic ") {
		run.secret("BL_CLIENT_CREDENTIALS", strings.TrimPrefix(auth, "Basic "))
	}
	onRequest, onAnswer, onForwarded := a.hooks()
	if onRequest != nil && strings.HasSuffix(r.URL.Path, "/oauth/token") {
		onRequest(ex)
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, a.Server.URL+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, "proxy: build request", http.StatusInternalServerError)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := a.client.Do(out)
	if err != nil {
		dropConn(w) // the fake reset or the caller gave up: the caller sees the same
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		dropConn(w)
		return
	}
	ex.Status = resp.StatusCode
	var tr map[string]any
	if json.Unmarshal(answer, &tr) == nil {
		ex.Access, _ = tr["access_token"].(string)
		ex.NewRefresh, _ = tr["refresh_token"].(string)
		dc, _ := tr["device_code"].(string)
		run.secret("access token", ex.Access)
		run.secret("refresh token", ex.NewRefresh)
		run.secret("device code", dc)
	}
	if resp.StatusCode == http.StatusOK && ex.Access != "" {
		a.mu.Lock()
		a.issued[ex.Access] = issuedToken{refresh: ex.NewRefresh, at: time.Now()}
		if ex.OldRefresh != "" && ex.NewRefresh != "" {
			a.rotations[ex.OldRefresh] = ex.NewRefresh
		}
		a.mu.Unlock()
	}
	if onAnswer != nil && strings.HasSuffix(r.URL.Path, "/oauth/token") {
		onAnswer(ex)
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if onForwarded != nil && strings.HasSuffix(r.URL.Path, "/oauth/token") {
		onForwarded(ex)
	}
}

func dropConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
			return
		}
	}
	http.Error(w, "proxy: no answer", http.StatusBadGateway)
}
