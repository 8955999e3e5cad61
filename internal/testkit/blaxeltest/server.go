// Package blaxeltest is a fake Blaxel API for tests: a real HTTP server on loopback that speaks
// Blaxel's JSON dialect of the token endpoint (client credentials, refresh with rotating refresh
// tokens, device login), issues JWTs with exp and iat, counts requests, and fails on demand.
// It has a clock of its own (SetNow, SetClockOffset): the tokens' iat and exp, every answer's
// Date header and the API side's expiry check all follow it, as a real issuer's would when the
// client's clock is skewed.
// Its API side (api.go) answers authenticated GETs such as the SDKs' listModels, checking every
// call's token and workspace the way Blaxel's API does; sandbox.go adds sandboxes and previews
// whose URLs name a SandboxHost, a second loopback server that checks tokens the same way.
package blaxeltest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Fault makes the token endpoint misbehave.
type Fault int

// Faults the server can inject.
const (
	FaultNone          Fault = iota
	Fault500                 // HTTP 500 with a JSON body
	Fault503                 // HTTP 503, no body
	Fault429                 // HTTP 429 with Retry-After: RetryAfter seconds
	FaultHTML                // HTTP 502 with an HTML page, as a proxy sends
	FaultGarbage             // HTTP 200 with a body that is not a token
	FaultHang                // answers only after SetHang's delay (a minute by default), if the client still waits
	FaultReset               // closes the connection without an answer
	FaultInvalidGrant        // HTTP 400 invalid_grant
	FaultInvalidClient       // HTTP 401 invalid_client
)

// Server is the fake API. Its fields may be changed between requests through the setters;
// it is safe for concurrent use.
type Server struct {
	*httptest.Server
	// Base is the API base URL to put in BL_API_URL (…/v0).
	Base string

	mu         sync.Mutex
	now        func() time.Time
	ttl        time.Duration
	key        []byte
	clients    map[string]string // id → secret
	refresh    map[string]session
	used       map[string]bool // refresh tokens already exchanged (rotation)
	inFlight   int             // token requests being handled
	devices    map[string]*device
	fault      Fault
	faultLeft  int // faults left to inject; <0 forever
	retryAfter int
	hang       time.Duration
	counts     map[string]int
	rotate     bool
	slowDownAt int // the device poll number answered with slow_down; 0 never
	issued     map[string]time.Time
	dateSkew   time.Duration // the Date header's clock less the token clock
	// clientIDOptional accepts a refresh grant without client_id (the TypeScript SDK sends none).
	clientIDOptional bool

	// The API side (api.go).
	apiKeys    map[string]string // API key → workspace ("" any)
	bound      map[string]string // token subject → workspace
	revoked    map[string]bool   // tokens Revoke named
	apiOK      int
	apiRejects map[string]int // reason → count
	tokenUA    map[string]int // User-Agent → token requests
	tokenUAErr map[string]int // User-Agent → token requests answered with an error status

	// Sandboxes and previews (sandbox.go).
	sandboxes map[string]string // sandbox name → metadata.url
	previews  map[string]string // "sandbox/preview" → spec.url
}

type session struct {
	subject    string
	deviceCode string
}

type device struct {
	userCode string
	approved bool
	denied   bool
	polls    int
	expires  time.Time
}

// New starts a fake API on 127.0.0.1. Tokens live ttl (2h when zero).
func New(ttl time.Duration) *Server {
	if ttl <= 0 {
		ttl = 2 * time.Hour
	}
	s := &Server{now: func() time.Time { return time.Now() }, ttl: ttl, key: randomBytes(32),
		clients: map[string]string{}, refresh: map[string]session{}, used: map[string]bool{},
		devices: map[string]*device{}, counts: map[string]int{}, rotate: true, faultLeft: -1,
		apiKeys: map[string]string{}, bound: map[string]string{}, revoked: map[string]bool{}, apiRejects: map[string]int{},
		tokenUA: map[string]int{}, tokenUAErr: map[string]int{}, sandboxes: map[string]string{}, previews: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v0/oauth/token", s.countByCaller(s.token))
	mux.HandleFunc("POST /v0/login/device", s.deviceStart)
	mux.HandleFunc("GET /v0/.well-known/openid-configuration", s.discovery)
	mux.HandleFunc("GET /v0/", s.api)
	s.Server = httptest.NewServer(s.dated(mux))
	s.Base = s.URL + "/v0"
	return s
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomString(prefix string) string { return prefix + hex.EncodeToString(randomBytes(12)) }

// SetNow replaces the server's clock (tokens' iat and exp, the Date header and the API side's
// expiry check follow it).
func (s *Server) SetNow(now func() time.Time) { s.mu.Lock(); s.now = now; s.mu.Unlock() }

// SetClockOffset sets the server's clock d ahead of the real one (behind when d < 0): the
// fake then issues and judges tokens as an issuer would whose clock disagrees with the
// client's by -d.
func (s *Server) SetClockOffset(d time.Duration) {
	s.SetNow(func() time.Time { return time.Now().Add(d) })
}

// Now is the time on the server's clock.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	now := s.now
	s.mu.Unlock()
	return now()
}

// SetDateSkew makes the Date header d ahead of the clock that signs the tokens (behind when
// d < 0), as a front end with a clock of its own would: the two clocks a client can read
// then disagree.
func (s *Server) SetDateSkew(d time.Duration) { s.mu.Lock(); s.dateSkew = d; s.mu.Unlock() }

// dated sends every answer with a Date header from the server's clock, as an origin server
// does from its own (net/http would use the real one).
func (s *Server) dated(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		skew := s.dateSkew
		s.mu.Unlock()
		w.Header().Set("Date", s.Now().Add(skew).UTC().Format(http.TimeFormat))
		h.ServeHTTP(w, r)
	})
}

// SetTTL changes the lifetime of tokens issued from now on.
func (s *Server) SetTTL(d time.Duration) { s.mu.Lock(); s.ttl = d; s.mu.Unlock() }

// SetRotate chooses whether refresh grants return a new refresh token (and reject the old one).
func (s *Server) SetRotate(on bool) { s.mu.Lock(); s.rotate = on; s.mu.Unlock() }

// SetFault makes the next n token requests fail with f (n < 0: until changed). Retry-After is
// sent with Fault429.
func (s *Server) SetFault(f Fault, n int) {
	s.mu.Lock()
	s.fault, s.faultLeft = f, n
	s.mu.Unlock()
}

// SetRetryAfter sets the Retry-After seconds sent with Fault429.
func (s *Server) SetRetryAfter(sec int) { s.mu.Lock(); s.retryAfter = sec; s.mu.Unlock() }

// AddClient registers a service account and returns its BL_CLIENT_CREDENTIALS value.
func (s *Server) AddClient(id, secret string) string {
	s.mu.Lock()
	s.clients[id] = secret
	s.mu.Unlock()
	return base64.StdEncoding.EncodeToString([]byte(id + ":" + secret))
}

// NewSession creates a bl login session and returns its access and refresh tokens, as bl login
// would have saved them.
func (s *Server) NewSession(subject, deviceCode string) (access, refresh string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	refresh = randomString("rt-")
	s.refresh[refresh] = session{subject, deviceCode}
	return s.jwtLocked(subject), refresh
}

// Token issues a valid access token for subject without counting a request.
func (s *Server) Token(subject string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jwtLocked(subject)
}

// TokenExpiring issues an access token that expires at exp and was issued lifetime before.
func (s *Server) TokenExpiring(subject string, exp time.Time, lifetime time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sign(subject, exp.Add(-lifetime), exp)
}

// Count returns how many token requests of a grant type ("client_credentials", "refresh_token",
// "device_code", or "" for all) reached the server, including failed ones.
func (s *Server) Count(grant string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if grant == "" {
		n := 0
		for _, c := range s.counts {
			n += c
		}
		return n
	}
	return s.counts[grant]
}

// ApproveDevice approves (or denies) the device login whose user code is userCode.
func (s *Server) ApproveDevice(userCode string, approve bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		if d.userCode == userCode {
			d.approved, d.denied = approve, !approve
			return true
		}
	}
	return false
}

func (s *Server) jwtLocked(subject string) string {
	now := s.now()
	tok := s.sign(subject, now, now.Add(s.ttl))
	s.noteIssuedLocked(tok)
	return tok
}

// maxIssued bounds how many tokens IssuedAt remembers.
const maxIssued = 4096

// noteIssuedLocked records when tok was issued, on the real clock (for IssuedAt).
func (s *Server) noteIssuedLocked(tok string) {
	if s.issued == nil {
		s.issued = map[string]time.Time{}
	}
	if len(s.issued) >= maxIssued {
		clear(s.issued)
	}
	s.issued[tok] = time.Now()
}

// IssuedAt reports when the server issued tok, on the real clock (not SetNow's): the moment a
// benchmark measures a token's spreading from.
func (s *Server) IssuedAt(tok string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.issued[tok]
	return t, ok
}

func (s *Server) sign(subject string, iat, exp time.Time) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	payload, _ := json.Marshal(map[string]any{"sub": subject, "iat": iat.Unix(), "exp": exp.Unix(), "jti": hex.EncodeToString(randomBytes(8)), "iss": "blaxeltest"})
	msg := head + "." + enc.EncodeToString(payload)
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// injectFault answers with the configured fault and reports whether it did.
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	f, left, ra, hang := s.fault, s.faultLeft, s.retryAfter, s.hang
	if f != FaultNone && left != 0 {
		if left > 0 {
			s.faultLeft--
		}
	} else {
		f = FaultNone
	}
	s.mu.Unlock()
	switch f {
	case FaultNone:
		return false
	case Fault500:
		oauthError(w, 500, "server_error", "internal error")
	case Fault503:
		w.WriteHeader(503)
	case Fault429:
		w.Header().Set("Retry-After", fmt.Sprint(ra))
		oauthError(w, 429, "rate_limited", "slow down")
	case FaultHTML:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(502)
		_, _ = w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>"))
	case FaultGarbage:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"acc`))
	case FaultHang:
		if hang <= 0 {
			hang = time.Minute
		}
		select {
		case <-r.Context().Done():
		case <-time.After(hang):
			return false // a slow answer, but an answer
		}
	case FaultReset:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
	case FaultInvalidGrant:
		oauthError(w, 400, "invalid_grant", "the refresh token is invalid or expired")
	case FaultInvalidClient:
		oauthError(w, 401, "invalid_client", "client authentication failed")
	}
	return true
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	var body map[string]string
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		oauthError(w, 400, "invalid_request", "expected a JSON body")
		return
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		oauthError(w, 400, "invalid_request", "malformed JSON")
		return
	}
	grant := body["grant_type"]
	kind := grant
	if kind == "urn:ietf:params:oauth:grant-type:device_code" {
		kind = "device_code"
	}
	s.mu.Lock()
	s.counts[kind]++
	s.inFlight++
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.inFlight--; s.mu.Unlock() }()
	if kind != "device_code" && s.injectFault(w, r) {
		return
	}
	switch kind {
	case "client_credentials":
		s.clientCredentials(w, r)
	case "refresh_token":
		s.refreshGrant(w, body)
	case "device_code":
		s.devicePoll(w, body)
	default:
		oauthError(w, 400, "unsupported_grant_type", "unsupported grant type")
	}
}

func (s *Server) clientCredentials(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(auth, "Basic "))
	id, secret, ok := strings.Cut(string(raw), ":")
	s.mu.Lock()
	want, known := s.clients[id]
	s.mu.Unlock()
	if !strings.HasPrefix(auth, "Basic ") || err != nil || !ok || !known || !hmac.Equal([]byte(want), []byte(secret)) {
		oauthError(w, 401, "invalid_client", "client authentication failed")
		return
	}
	s.mu.Lock()
	tok := s.jwtLocked(clientSubject(id))
	ttl := s.ttl
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(ttl.Seconds())})
}

func (s *Server) refreshGrant(w http.ResponseWriter, body map[string]string) {
	rt := body["refresh_token"]
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.refresh[rt]
	if cid, sent := body["client_id"]; cid != "blaxel" && (sent || !s.clientIDOptional) {
		oauthError(w, 400, "invalid_client", "unknown client")
		return
	}
	if !ok || s.used[rt] {
		oauthError(w, 400, "invalid_grant", "the refresh token is invalid, expired or already used")
		return
	}
	if sess.deviceCode != "" && body["device_code"] != sess.deviceCode {
		oauthError(w, 400, "invalid_grant", "device code mismatch")
		return
	}
	resp := map[string]any{"access_token": s.jwtLocked(sess.subject), "token_type": "Bearer", "expires_in": int(s.ttl.Seconds())}
	if s.rotate {
		s.used[rt] = true
		nrt := randomString("rt-")
		s.refresh[nrt] = sess
		resp["refresh_token"] = nrt
	}
	writeJSON(w, 200, resp)
}

func (s *Server) deviceStart(w http.ResponseWriter, r *http.Request) {
	var body map[string]string
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil || body["client_id"] != "blaxel" {
		oauthError(w, 400, "invalid_request", "client_id blaxel expected")
		return
	}
	code := randomString("dc-")
	user := strings.ToUpper(hex.EncodeToString(randomBytes(2)) + "-" + hex.EncodeToString(randomBytes(2)))
	s.mu.Lock()
	s.devices[code] = &device{userCode: user, expires: s.now().Add(10 * time.Minute)}
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{"device_code": code, "user_code": user,
		"verification_uri": s.URL + "/device", "verification_uri_complete": s.URL + "/device?user_code=" + user,
		"expires_in": 600, "interval": 1})
}

func (s *Server) devicePoll(w http.ResponseWriter, body map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[body["device_code"]]
	switch {
	case !ok || body["client_id"] != "blaxel":
		oauthError(w, 400, "invalid_grant", "unknown device code")
	case s.now().After(d.expires):
		oauthError(w, 400, "expired_token", "the device code expired")
	case d.denied:
		oauthError(w, 400, "access_denied", "the user denied the login")
	case !d.approved:
		d.polls++
		if d.polls == s.slowDownAt {
			oauthError(w, 400, "slow_down", "polling too fast")
			return
		}
		oauthError(w, 400, "authorization_pending", "waiting for the user")
	default:
		delete(s.devices, body["device_code"])
		rt := randomString("rt-")
		s.refresh[rt] = session{"user", body["device_code"]}
		writeJSON(w, 200, map[string]any{"access_token": s.jwtLocked("user"), "refresh_token": rt, "token_type": "Bearer", "expires_in": int(s.ttl.Seconds())})
	}
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{"issuer": s.URL, "token_endpoint": s.Base + "/oauth/token"})
}

// Consumed reports whether refresh token rt has been exchanged (and so rotated away), whether or
// not its answer reached the caller.
func (s *Server) Consumed(rt string) bool { s.mu.Lock(); defer s.mu.Unlock(); return s.used[rt] }

// TokenRequestsInFlight is the number of token requests the fake is handling now (a held one
// included).
func (s *Server) TokenRequestsInFlight() int { s.mu.Lock(); defer s.mu.Unlock(); return s.inFlight }

// SetHang sets how long FaultHang holds a request (a minute when zero).
func (s *Server) SetHang(d time.Duration) { s.mu.Lock(); s.hang = d; s.mu.Unlock() }

// SetSlowDownAt makes the n-th poll of each device login answer slow_down (0: never).
func (s *Server) SetSlowDownAt(n int) { s.mu.Lock(); s.slowDownAt = n; s.mu.Unlock() }
