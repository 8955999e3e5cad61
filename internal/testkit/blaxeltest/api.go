package blaxeltest

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Reasons an API call is rejected, as counted by APICalls and sent in the 401 body's error.
const (
	RejectNoToken        = "no_token"          // neither X-Blaxel-Authorization nor Authorization carries a bearer token
	RejectBadToken       = "invalid_token"     // not a registered API key, nor a JWT signed by this server
	RejectExpired        = "token_expired"     // a JWT of this server whose exp has passed
	RejectNoWorkspace    = "missing_workspace" // no X-Blaxel-Workspace header
	RejectWrongWorkspace = "wrong_workspace"   // the credential is bound to another workspace
	RejectRevoked        = "token_revoked"     // a token Revoke named, before its expiry
)

// APIStats counts the calls made to the API side (every GET under /v0 other than the discovery
// document).
type APIStats struct {
	OK       int
	Rejected int
	Reasons  map[string]int // Reject* → count
}

// IsDaemon reports whether a User-Agent is blauthd's (blauthd/<version>).
func IsDaemon(userAgent string) bool { return strings.HasPrefix(userAgent, "blauthd/") }

// NotDaemon reports whether a User-Agent is anything but blauthd's: an SDK, a client library.
func NotDaemon(userAgent string) bool { return !IsDaemon(userAgent) }

// SetClientIDOptional makes a refresh grant without client_id acceptable (a wrong client_id is
// still refused). Blaxel's TypeScript SDK refreshes a bl login session with {grant_type,
// device_code, refresh_token} and no client_id; the default (off) keeps checking that a client
// which sends client_id, as blauthd and the Go SDK do, sends "blaxel".
func (s *Server) SetClientIDOptional(on bool) { s.mu.Lock(); s.clientIDOptional = on; s.mu.Unlock() }

// AddAPIKey registers an API key (the opaque string of BL_API_KEY). A non-empty workspace binds
// it: calls with another X-Blaxel-Workspace are refused.
func (s *Server) AddAPIKey(key, workspace string) {
	s.mu.Lock()
	s.apiKeys[key] = workspace
	s.mu.Unlock()
}

// Revoke makes the API refuse token from now on, as Blaxel's does with a token revoked or
// replaced before its expiry.
func (s *Server) Revoke(token string) {
	s.mu.Lock()
	s.revoked[token] = true
	s.mu.Unlock()
}

// BindSession binds the access tokens issued to a login session's subject (NewSession's
// subject) to workspace: calls with another X-Blaxel-Workspace are refused.
func (s *Server) BindSession(subject, workspace string) {
	s.mu.Lock()
	s.bound[subject] = workspace
	s.mu.Unlock()
}

// BindClient binds the access tokens issued to a service account (AddClient's id) to workspace.
func (s *Server) BindClient(id, workspace string) { s.BindSession(clientSubject(id), workspace) }

func clientSubject(id string) string { return "sa:" + id }

// APICalls returns the API side's counters so far.
func (s *Server) APICalls() APIStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := APIStats{OK: s.apiOK, Reasons: map[string]int{}}
	for r, n := range s.apiRejects {
		st.Rejected += n
		st.Reasons[r] = n
	}
	return st
}

// TokenRequestsBy counts the requests to the token endpoint (any grant, answered or not) whose
// User-Agent satisfies match.
func (s *Server) TokenRequestsBy(match func(userAgent string) bool) int {
	return s.countUA(s.tokenUA, match)
}

// TokenFailuresBy counts the token requests whose User-Agent satisfies match and that were
// answered with an error status (4xx, 5xx) or not at all.
func (s *Server) TokenFailuresBy(match func(userAgent string) bool) int {
	return s.countUA(s.tokenUAErr, match)
}

// countUA sums the counts of byUA (a per-User-Agent map of s) whose User-Agent satisfies match.
func (s *Server) countUA(byUA map[string]int, match func(userAgent string) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ua, c := range byUA {
		if match(ua) {
			n += c
		}
	}
	return n
}

// TokenRequests splits the token requests between blauthd (IsDaemon) and every other caller,
// such as an SDK process.
func (s *Server) TokenRequests() (daemon, other int) {
	d := s.TokenRequestsBy(IsDaemon)
	return d, s.TokenRequestsBy(func(string) bool { return true }) - d
}

// TokenCallers lists the User-Agents seen at the token endpoint, sorted.
func (s *Server) TokenCallers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.tokenUA))
	for ua := range s.tokenUA {
		out = append(out, ua)
	}
	sort.Strings(out)
	return out
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status   int
	hijacked bool // the handler took the connection (FaultReset)
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (and the hijack of FaultReset) reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countByCaller counts each token request by its User-Agent, and its outcome.
func (s *Server) countByCaller(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ua := r.Header.Get("User-Agent")
		s.mu.Lock()
		s.tokenUA[ua]++
		s.mu.Unlock()
		failed := func() {
			s.mu.Lock()
			s.tokenUAErr[ua]++
			s.mu.Unlock()
		}
		sw := &statusWriter{ResponseWriter: w}
		if hj, ok := w.(http.Hijacker); ok {
			// FaultReset hijacks the connection: keep that possible through the wrapper, and
			// count the failure before the close lets the client see it.
			h(hijackWriter{sw, hj, failed}, r)
		} else {
			h(sw, r)
		}
		if !sw.hijacked && (sw.status == 0 || sw.status >= 400) {
			failed()
		}
	}
}

type hijackWriter struct {
	*statusWriter
	hj     http.Hijacker
	failed func()
}

// Hijack counts the request as failed (no answer will be written), then hands the connection over.
func (w hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	w.failed()
	return w.hj.Hijack()
}

// api answers an authenticated GET {base}/…: /models lists two models; /sandboxes/NAME and its
// previews those added (sandbox.go), 404 for others under /sandboxes/; any other path an empty
// list, wrapped in {data, meta} when the request names an API version (Blaxel-Version). Every call must carry a bearer token (X-Blaxel-Authorization, or Authorization as the
// API also accepts) that is a registered API key or an unexpired JWT signed by this server, and
// an X-Blaxel-Workspace header matching the workspace the credential is bound to, if any.
// Otherwise: 401 with {"error": Reject…, "error_description": …}.
func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	workspace := r.Header.Get("X-Blaxel-Workspace")
	reason, desc := s.authorize(bearer(r), workspace)
	s.mu.Lock()
	if reason != "" {
		s.apiRejects[reason]++
	} else {
		s.apiOK++
	}
	s.mu.Unlock()
	if reason != "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": reason, "error_description": desc})
		return
	}
	if v, ok := s.sandboxAnswer(r.URL.Path, workspace); ok {
		writeJSON(w, http.StatusOK, v)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v0/sandboxes/") {
		writeJSON(w, http.StatusNotFound, map[string]any{"code": 404, "error": "no such sandbox or preview"})
		return
	}
	items := []any{}
	if strings.TrimSuffix(r.URL.Path, "/") == "/v0/models" {
		for _, name := range []string{"sandbox-openai", "sandbox-anthropic"} {
			items = append(items, map[string]any{
				"metadata": map[string]any{"name": name, "workspace": workspace},
				"spec":     map[string]any{"enabled": true},
			})
		}
	}
	// API version 2026-04-28, which the SDKs ask for in Blaxel-Version, wraps lists in {data,
	// meta}; a request that names no version (curl, urllib) gets the bare list, as from the API.
	if r.Header.Get("Blaxel-Version") == "" {
		writeJSON(w, http.StatusOK, items)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": items, "meta": map[string]any{"hasMore": false, "total": len(items)}})
}

// bearer returns the bearer token of X-Blaxel-Authorization, else of Authorization.
func bearer(r *http.Request) string {
	for _, h := range []string{"X-Blaxel-Authorization", "Authorization"} {
		v := r.Header.Get(h)
		if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			if tok := strings.TrimSpace(v[7:]); tok != "" {
				return tok
			}
		}
	}
	return ""
}

// authorize returns "" when token may call the API for workspace, else a Reject… reason and a
// description.
func (s *Server) authorize(token, workspace string) (reason, desc string) {
	if token == "" {
		return RejectNoToken, "no bearer token in X-Blaxel-Authorization or Authorization"
	}
	s.mu.Lock()
	keyWS, isKey := s.apiKeys[token]
	now, revoked := s.now(), s.revoked[token]
	s.mu.Unlock()
	if revoked {
		return RejectRevoked, "the token was revoked"
	}
	var boundTo string
	if isKey {
		boundTo = keyWS
	} else {
		sub, exp, ok := s.verify(token)
		if !ok {
			return RejectBadToken, "the token is neither an API key nor a token issued by this server"
		}
		if !now.Before(exp) {
			return RejectExpired, "the token expired at " + exp.UTC().Format(time.RFC3339)
		}
		s.mu.Lock()
		boundTo = s.bound[sub]
		s.mu.Unlock()
	}
	if workspace == "" {
		return RejectNoWorkspace, "no X-Blaxel-Workspace header"
	}
	if boundTo != "" && boundTo != workspace {
		return RejectWrongWorkspace, "the credential belongs to workspace " + boundTo + ", not " + workspace
	}
	return "", ""
}

// verify checks a JWT's signature against this server's key and returns its sub and exp.
func (s *Server) verify(token string) (sub string, exp time.Time, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", time.Time{}, false
	}
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return "", time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", time.Time{}, false
	}
	var claims struct {
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.Exp == 0 {
		return "", time.Time{}, false
	}
	return claims.Sub, time.Unix(claims.Exp, 0), true
}
