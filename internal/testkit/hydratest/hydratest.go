// Package hydratest runs a real Ory Hydra OAuth 2.0 / OpenID Connect server
// for tests, on 127.0.0.1 only, with an in-memory database.
//
// The Hydra binary is built by .ci/hydra-build.sh from its own Go module
// (tools/hydra) into <repo root>/.tools/bin/hydra; set BLAUTH_HYDRA_BIN to use
// another one. When the binary is missing, Start fails the test: the suites
// that use it are built with the real tag and run by make test-real, where a
// missing component must fail the run rather than skip.
//
// A typical test:
//
//	srv := hydratest.Start(t, hydratest.Options{AccessTokenTTL: time.Minute})
//	id, secret := srv.CreateClient(t, "client_secret_basic", "client_credentials")
//	// ... POST grant_type=client_credentials to srv.TokenURL() ...
//
//	id, secret = srv.CreateAuthCodeClient(t, "client_secret_basic")
//	access, refresh := srv.LoginSession(t, id, secret)
//
// Access tokens are JWTs (strategies.access_token: jwt). Hydra rotates refresh
// tokens: every refresh_token grant returns a new refresh token and the old
// one stops working.
//
// The package uses the standard library only.
package hydratest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables read by Start.
const (
	// EnvHydraBin names a Hydra binary to use instead of <repo>/.tools/bin/hydra.
	EnvHydraBin = "BLAUTH_HYDRA_BIN"
)

// Token endpoint authentication methods accepted by CreateClient.
const (
	AuthBasic = "client_secret_basic"
	AuthPost  = "client_secret_post"
)

// Scope given to every client created by CreateClient, and requested by
// LoginSession.
const ClientScope = "offline_access openid"

const (
	defaultAccessTokenTTL = time.Minute
	defaultStartTimeout   = 60 * time.Second
	stopTimeout           = 10 * time.Second
	requestTimeout        = 15 * time.Second
	mainModule            = "github.com/blauth/blauth"
)

// Options configures the Hydra server started by Start. The zero value is
// valid.
type Options struct {
	// AccessTokenTTL is Hydra's ttl.access_token: the lifetime of access
	// tokens (exp - iat in the JWT). Whole seconds, at least 1s.
	// Default 1m.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL is Hydra's ttl.refresh_token. Whole seconds; zero
	// keeps Hydra's default (720h).
	RefreshTokenTTL time.Duration
	// StartTimeout bounds the wait for Hydra to become ready. Default 60s.
	StartTimeout time.Duration
}

// Server is a running Hydra process. Its methods are safe for concurrent use.
type Server struct {
	publicURL   string // http://127.0.0.1:PORT, also the issuer
	adminURL    string // http://127.0.0.1:PORT
	loginURL    string // where Hydra sends the browser to log in
	consentURL  string // where Hydra sends the browser for consent
	redirectURI string // registered for authorization-code clients
	accessTTL   time.Duration
	logPath     string

	http *http.Client // no redirects followed

	mu      sync.Mutex
	clients map[string]string // client id -> token endpoint auth method
}

// Start starts Hydra (`hydra serve all --dev`) with an in-memory database and
// waits until both its public and admin APIs are ready. The process is killed
// when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := findBinary(t)

	ttl := opts.AccessTokenTTL
	if ttl == 0 {
		ttl = defaultAccessTokenTTL
	}
	if ttl < time.Second || ttl%time.Second != 0 {
		t.Fatalf("hydratest: AccessTokenTTL %v must be a whole number of seconds, at least 1s", ttl)
	}
	if opts.RefreshTokenTTL < 0 || opts.RefreshTokenTTL%time.Second != 0 {
		t.Fatalf("hydratest: RefreshTokenTTL %v must be a whole number of seconds", opts.RefreshTokenTTL)
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = defaultStartTimeout
	}

	dir := t.TempDir()
	deadline := time.Now().Add(timeout)
	// A port chosen by listening on :0 and closing can be taken by someone
	// else before Hydra binds it; try again with new ports in that case.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		s, err := start(t, bin, dir, attempt, ttl, opts.RefreshTokenTTL, deadline)
		if err == nil {
			return s
		}
		if errors.Is(err, errAddrInUse) && attempt < attempts && time.Now().Before(deadline) {
			t.Logf("hydratest: %v; retrying with other ports", err)
			continue
		}
		t.Fatalf("hydratest: %v", err)
	}
}

var errAddrInUse = errors.New("hydra could not bind its port (address already in use)")

func start(t testing.TB, bin, dir string, attempt int, accessTTL, refreshTTL time.Duration, deadline time.Time) (*Server, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	public := "http://" + ports[0]
	admin := "http://" + ports[1]
	// Nothing listens on the login/consent "app": LoginSession reads the
	// challenges from Hydra's redirects without following them.
	app := "http://" + ports[2]

	s := &Server{
		publicURL:   public,
		adminURL:    admin,
		loginURL:    app + "/login",
		consentURL:  app + "/consent",
		redirectURI: app + "/callback",
		accessTTL:   accessTTL,
		logPath:     filepath.Join(dir, fmt.Sprintf("hydra-%d.log", attempt)),
		http: &http.Client{
			Timeout: requestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		clients: map[string]string{},
	}

	secret, err := randomString(24) // 48 hex characters
	if err != nil {
		return nil, err
	}
	ttl := map[string]any{"access_token": durationString(accessTTL)}
	if refreshTTL > 0 {
		ttl["refresh_token"] = durationString(refreshTTL)
	}
	cfg := map[string]any{
		"dsn": "memory",
		"serve": map[string]any{
			"public": hostPort(ports[0]),
			"admin":  hostPort(ports[1]),
		},
		"urls": map[string]any{
			"self":    map[string]any{"issuer": public, "public": public, "admin": admin},
			"login":   s.loginURL,
			"consent": s.consentURL,
			"error":   app + "/error",
			"logout":  app + "/logout",
		},
		"secrets":    map[string]any{"system": []string{secret}},
		"strategies": map[string]any{"access_token": "jwt"},
		"ttl":        ttl,
		"log":        map[string]any{"level": "info", "format": "text"},
	}
	cfgJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "hydra.json")
	if err := os.WriteFile(cfgPath, cfgJSON, 0o600); err != nil {
		return nil, err
	}

	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy

	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out", "-c", cfgPath)
	cmd.Dir = dir
	// A minimal environment: Hydra reads configuration from environment
	// variables (DSN, SECRETS_SYSTEM, ...), which must not leak in from the
	// test's environment.
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"TMPDIR=" + dir,
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			t.Logf("hydratest: hydra (pid %d) did not exit %v after SIGKILL", cmd.Process.Pid, stopTimeout)
		}
	}

	began := time.Now()
	if err := s.waitReady(exited, deadline); err != nil {
		stop()
		if errors.Is(err, errExited) {
			if logContains(s.logPath, "address already in use") {
				return nil, errAddrInUse
			}
			err = fmt.Errorf("%w (%v)", err, waitErr)
		}
		return nil, fmt.Errorf("%v\n--- tail of %s ---\n%s", err, s.logPath, tail(s.logPath, 40))
	}
	// Hydra creates its signing keys on first use, which takes seconds; the
	// first token would then carry an iat seconds later than the moment its
	// exp was computed from. Fetching the JWKS creates the keys now.
	if err := s.warmUp(deadline); err != nil {
		stop()
		return nil, fmt.Errorf("%v\n--- tail of %s ---\n%s", err, s.logPath, tail(s.logPath, 40))
	}
	t.Logf("hydratest: hydra ready in %v (public %s, admin %s)", time.Since(began).Round(time.Millisecond), public, admin)

	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("hydratest: --- tail of %s ---\n%s", s.logPath, tail(s.logPath, 40))
		}
	})
	return s, nil
}

var errExited = errors.New("hydra exited before it was ready")

// waitReady polls /health/ready on both APIs until they answer 200.
func (s *Server) waitReady(exited <-chan struct{}, deadline time.Time) error {
	c := &http.Client{Timeout: 2 * time.Second}
	var last error
	for _, base := range []string{s.adminURL, s.publicURL} {
		for {
			select {
			case <-exited:
				return errExited
			default:
			}
			resp, err := c.Get(base + "/health/ready")
			if err == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				err = fmt.Errorf("%s/health/ready: %s", base, resp.Status)
			}
			last = err
			if time.Now().After(deadline) {
				return fmt.Errorf("hydra not ready before the deadline: %v", last)
			}
			select {
			case <-exited:
				return errExited
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// warmUp fetches /.well-known/jwks.json, which makes Hydra generate its
// ID token and JWT access token signing keys.
func (s *Server) warmUp(deadline time.Time) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.JWKSURL(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the JWKS to create signing keys: %w", err)
	}
	defer resp.Body.Close()
	var jwks struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the JWKS to create signing keys: %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&jwks); err != nil || len(jwks.Keys) == 0 {
		return fmt.Errorf("fetching the JWKS to create signing keys: no keys (%v)", err)
	}
	return nil
}

// TokenURL is the OAuth 2.0 token endpoint (public API).
func (s *Server) TokenURL() string { return s.publicURL + "/oauth2/token" }

// AuthURL is the OAuth 2.0 authorization endpoint (public API).
func (s *Server) AuthURL() string { return s.publicURL + "/oauth2/auth" }

// JWKSURL is the JSON Web Key Set with the public keys signing access and ID
// tokens.
func (s *Server) JWKSURL() string { return s.publicURL + "/.well-known/jwks.json" }

// IssuerURL is the issuer (iss claim) of Hydra's tokens; it is also the base
// URL of the public API, /.well-known/openid-configuration included.
func (s *Server) IssuerURL() string { return s.publicURL }

// AdminURL is the base URL of Hydra's admin API.
func (s *Server) AdminURL() string { return s.adminURL }

// RedirectURI is the redirect URI registered for clients created with the
// authorization_code grant. Nothing listens on it.
func (s *Server) RedirectURI() string { return s.redirectURI }

// AccessTokenTTL is the configured lifetime of access tokens.
func (s *Server) AccessTokenTTL() time.Duration { return s.accessTTL }

// LogPath is the file receiving Hydra's output.
func (s *Server) LogPath() string { return s.logPath }

// CreateClient registers an OAuth 2.0 client through the admin API and
// returns its id and secret. authMethod is AuthBasic or AuthPost (empty
// means AuthBasic); grantTypes defaults to client_credentials. The client's
// scope is ClientScope. When grantTypes contains authorization_code the
// client also gets response type "code" and RedirectURI, so it can be used
// with LoginSession.
func (s *Server) CreateClient(t testing.TB, authMethod string, grantTypes ...string) (id, secret string) {
	t.Helper()
	if authMethod == "" {
		authMethod = AuthBasic
	}
	if authMethod != AuthBasic && authMethod != AuthPost {
		t.Fatalf("hydratest: CreateClient: auth method %q is not %s or %s", authMethod, AuthBasic, AuthPost)
	}
	if len(grantTypes) == 0 {
		grantTypes = []string{"client_credentials"}
	}
	body := map[string]any{
		"client_name":                "blauth-test",
		"grant_types":                grantTypes,
		"token_endpoint_auth_method": authMethod,
		"scope":                      ClientScope,
		"response_types":             []string{"token"},
	}
	for _, g := range grantTypes {
		if g == "authorization_code" {
			body["response_types"] = []string{"code"}
			body["redirect_uris"] = []string{s.redirectURI}
		}
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := s.adminJSON(http.MethodPost, "/admin/clients", nil, body, http.StatusCreated, &out); err != nil {
		t.Fatalf("hydratest: CreateClient: %v", err)
	}
	if out.ClientID == "" || out.ClientSecret == "" {
		t.Fatalf("hydratest: CreateClient: Hydra returned no client id or secret")
	}
	s.mu.Lock()
	s.clients[out.ClientID] = authMethod
	s.mu.Unlock()
	return out.ClientID, out.ClientSecret
}

// CreateAuthCodeClient registers a client for LoginSession: grant types
// authorization_code and refresh_token, response type code, redirect URI
// RedirectURI, scope ClientScope.
func (s *Server) CreateAuthCodeClient(t testing.TB, authMethod string) (id, secret string) {
	t.Helper()
	return s.CreateClient(t, authMethod, "authorization_code", "refresh_token")
}

// LoginSession runs the authorization-code flow headlessly for a user with
// subject "test-user", requesting scope ClientScope, and returns the access
// and refresh tokens from the code exchange. The client must come from
// CreateAuthCodeClient (or CreateClient with authorization_code and
// refresh_token); it authenticates at the token endpoint with the method it
// was created with.
//
// The flow: GET /oauth2/auth with a cookie jar, read login_challenge from the
// redirect to the login URL, accept it through the admin API, follow Hydra's
// redirect, read consent_challenge, accept all requested scopes, follow the
// redirect to RedirectURI, take the code and exchange it.
func (s *Server) LoginSession(t testing.TB, clientID, clientSecret string) (accessToken, refreshToken string) {
	t.Helper()
	tok, err := s.loginSession(clientID, clientSecret)
	if err != nil {
		t.Fatalf("hydratest: LoginSession: %v", err)
	}
	return tok.AccessToken, tok.RefreshToken
}

// token is a token endpoint response.
type token struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
}

func (s *Server) loginSession(clientID, clientSecret string) (*token, error) {
	s.mu.Lock()
	method, ok := s.clients[clientID]
	s.mu.Unlock()
	if !ok {
		method = AuthBasic
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	browser := &http.Client{
		Jar:     jar,
		Timeout: requestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	state, err := randomString(16)
	if err != nil {
		return nil, err
	}
	q := url.Values{
		"client_id":     {clientID},
		"response_type": {"code"},
		"scope":         {ClientScope},
		"redirect_uri":  {s.redirectURI},
		"state":         {state},
	}
	next := s.AuthURL() + "?" + q.Encode()

	var code string
	loggedIn, consented := false, false
	// Expected hops: auth -> login, auth(login_verifier) -> consent,
	// auth(consent_verifier) -> callback. Allow a few more for safety.
	for hop := 0; code == "" && hop < 10; hop++ {
		loc, err := browserGet(browser, next)
		if err != nil {
			return nil, err
		}
		lq := loc.Query()
		switch {
		case lq.Get("error") != "":
			return nil, fmt.Errorf("hydra redirected with error %q: %s", lq.Get("error"), lq.Get("error_description"))
		case sameEndpoint(loc, s.loginURL):
			if loggedIn {
				return nil, errors.New("hydra asked for login twice")
			}
			loggedIn = true
			challenge := lq.Get("login_challenge")
			if challenge == "" {
				return nil, fmt.Errorf("redirect to login URL without login_challenge: %s", redact(loc))
			}
			next, err = s.acceptLogin(challenge)
			if err != nil {
				return nil, err
			}
		case sameEndpoint(loc, s.consentURL):
			if consented {
				return nil, errors.New("hydra asked for consent twice")
			}
			consented = true
			challenge := lq.Get("consent_challenge")
			if challenge == "" {
				return nil, fmt.Errorf("redirect to consent URL without consent_challenge: %s", redact(loc))
			}
			next, err = s.acceptConsent(challenge)
			if err != nil {
				return nil, err
			}
		case sameEndpoint(loc, s.redirectURI):
			if got := lq.Get("state"); got != state {
				return nil, fmt.Errorf("state mismatch on redirect: got %q", got)
			}
			code = lq.Get("code")
			if code == "" {
				return nil, fmt.Errorf("redirect to %s without code", s.redirectURI)
			}
		default:
			// A hop inside Hydra's public API.
			next = loc.String()
		}
	}
	if code == "" {
		return nil, errors.New("too many redirects without reaching the redirect URI")
	}

	form := url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {code},
		"redirect_uri": {s.redirectURI},
	}
	tok, status, body, err := s.tokenRequest(form, clientID, clientSecret, method)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("code exchange: HTTP %d: %s", status, body)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		return nil, fmt.Errorf("code exchange returned no access or refresh token (scope %q)", tok.Scope)
	}
	return tok, nil
}

// browserGet GETs u and returns the Location of the redirect it answers with.
func browserGet(c *http.Client, u string) (*url.URL, error) {
	resp, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return nil, fmt.Errorf("GET %s: expected a redirect, got %s: %s", resp.Request.URL.Path, resp.Status, bytes.TrimSpace(body))
	}
	loc, err := resp.Location()
	if err != nil {
		return nil, fmt.Errorf("GET %s: %s without Location: %v", resp.Request.URL.Path, resp.Status, err)
	}
	return loc, nil
}

func sameEndpoint(u *url.URL, endpoint string) bool {
	e, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	return u.Scheme == e.Scheme && u.Host == e.Host && u.Path == e.Path
}

// redact drops the query of u, which may hold challenges or codes.
func redact(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	return c.String()
}

func (s *Server) acceptLogin(challenge string) (redirectTo string, err error) {
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	err = s.adminJSON(http.MethodPut, "/admin/oauth2/auth/requests/login/accept",
		url.Values{"login_challenge": {challenge}},
		map[string]any{"subject": "test-user", "remember": false},
		http.StatusOK, &out)
	if err != nil {
		return "", fmt.Errorf("accept login: %w", err)
	}
	if out.RedirectTo == "" {
		return "", errors.New("accept login: no redirect_to")
	}
	return out.RedirectTo, nil
}

func (s *Server) acceptConsent(challenge string) (redirectTo string, err error) {
	q := url.Values{"consent_challenge": {challenge}}
	var req struct {
		RequestedScope    []string `json:"requested_scope"`
		RequestedAudience []string `json:"requested_access_token_audience"`
	}
	if err := s.adminJSON(http.MethodGet, "/admin/oauth2/auth/requests/consent", q, nil, http.StatusOK, &req); err != nil {
		return "", fmt.Errorf("get consent request: %w", err)
	}
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	body := map[string]any{
		"grant_scope":                 nonNil(req.RequestedScope),
		"grant_access_token_audience": nonNil(req.RequestedAudience),
		"remember":                    false,
	}
	if err := s.adminJSON(http.MethodPut, "/admin/oauth2/auth/requests/consent/accept", q, body, http.StatusOK, &out); err != nil {
		return "", fmt.Errorf("accept consent: %w", err)
	}
	if out.RedirectTo == "" {
		return "", errors.New("accept consent: no redirect_to")
	}
	return out.RedirectTo, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// tokenRequest POSTs form to the token endpoint, authenticating the client
// with method. It returns the decoded token (when the status is 200), the
// status and the raw body.
func (s *Server) tokenRequest(form url.Values, clientID, clientSecret, method string) (*token, int, []byte, error) {
	if method == AuthPost {
		form.Set("client_id", clientID)
		form.Set("client_secret", clientSecret)
	}
	req, err := http.NewRequest(http.MethodPost, s.TokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if method != AuthPost {
		// RFC 6749 section 2.3.1: form-encode, then Basic.
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, resp.StatusCode, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, body, nil
	}
	var tok token
	if err := json.Unmarshal(body, &tok); err != nil {
		return nil, resp.StatusCode, body, fmt.Errorf("decoding token response: %w", err)
	}
	return &tok, resp.StatusCode, body, nil
}

// adminJSON calls the admin API with an optional JSON body and decodes a JSON
// answer into out. Error messages do not include request or response bodies
// of successful calls (they hold secrets).
func (s *Server) adminJSON(method, path string, query url.Values, in any, wantStatus int, out any) error {
	u := s.adminURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != wantStatus {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(body))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
	}
	return nil
}

// JWTClaims decodes the payload of a JWT without verifying its signature.
func JWTClaims(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT: %d dot-separated parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("JWT payload: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, fmt.Errorf("JWT payload: %w", err)
	}
	return claims, nil
}

// findBinary returns the Hydra binary to run, skipping or failing the test
// when there is none.
func findBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(EnvHydraBin)
	where := "$" + EnvHydraBin
	if bin == "" {
		root, err := repoRoot()
		if err != nil {
			missing(t, fmt.Sprintf("cannot locate the repository root: %v", err))
			return ""
		}
		bin = filepath.Join(root, ".tools", "bin", "hydra")
		where = "default path"
	}
	fi, err := os.Stat(bin)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		missing(t, fmt.Sprintf("no executable Hydra binary at %s (%s)", bin, where))
		return ""
	}
	return bin
}

func missing(t testing.TB, why string) {
	t.Helper()
	// Only suites built with the real tag use Hydra, and there a missing server is a failure,
	// never a skip: a skipped real-component test must not pass as green.
	t.Fatalf("hydratest: %s; build it with .ci/hydra-build.sh (or set %s)", why, EnvHydraBin)
}

// repoRoot walks up from the working directory to the directory whose go.mod
// declares the main module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isMainModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s above the working directory", mainModule)
		}
		dir = parent
	}
}

func isMainModule(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == mainModule
		}
	}
	return false
}

func freePorts(n int) ([]string, error) {
	var addrs []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	// Hold all listeners open until every port is chosen, so the ports differ.
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("choosing a free port: %w", err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func hostPort(addr string) map[string]any {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return map[string]any{"host": host, "port": p}
}

func durationString(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

func randomString(nbytes int) (string, error) {
	b := make([]byte, nbytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func logContains(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Contains(b, []byte(s))
}

// tail returns the last n lines of the file at path, each cut to 600 bytes.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 600 {
			lines[i] = l[:600] + " [...]"
		}
	}
	return strings.Join(lines, "\n")
}
