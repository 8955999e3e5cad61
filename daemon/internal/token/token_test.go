package token

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestBlaxelClientCredentialsBothForms(t *testing.T) {
	api := blaxeltest.New(time.Hour)
	defer api.Close()
	cc := api.AddClient("sa-id", "sa-secret")
	raw, _ := base64.StdEncoding.DecodeString(cc)
	x := &Blaxel{}
	for _, form := range []string{cc, string(raw)} {
		tok, err := x.ClientCredentials(ctx(t), api.Base, form)
		if err != nil {
			t.Fatalf("client credentials: %v", err)
		}
		exp, _, ok := JWTTimes(tok.AccessToken)
		if !ok || !tok.Expiry.Equal(exp) || tok.Lifetime() != time.Hour {
			t.Fatalf("expiry %v (JWT %v), lifetime %v", tok.Expiry, exp, tok.Lifetime())
		}
	}
}

func TestBlaxelRefreshAdoptsTheRotatedToken(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	api.SetRotate(true)
	_, rt := api.NewSession("user", "dev")
	x := &Blaxel{}
	tok, err := x.Refresh(ctx(t), api.Base, rt, "dev")
	if err != nil || tok.RefreshToken == "" || tok.RefreshToken == rt {
		t.Fatalf("refresh: %v, rotated %q", err, tok.RefreshToken)
	}
	if _, err := x.Refresh(ctx(t), api.Base, rt, "dev"); !IsPermanent(err) {
		t.Fatalf("the spent refresh token: %v, want a permanent error", err)
	}
	if _, err := x.Refresh(ctx(t), api.Base, tok.RefreshToken, "dev"); err != nil {
		t.Fatalf("the rotated refresh token: %v", err)
	}
}

func TestBlaxelErrorsAreClassified(t *testing.T) {
	for _, tc := range []struct {
		fault      blaxeltest.Fault
		permanent  bool
		retryAfter time.Duration
		code       string
	}{
		{blaxeltest.Fault500, false, 0, "server_error"},
		{blaxeltest.Fault503, false, 0, ""},
		{blaxeltest.Fault429, false, 7 * time.Second, "rate_limited"},
		{blaxeltest.FaultHTML, false, 0, ""},
		{blaxeltest.FaultGarbage, false, 0, ""},
		{blaxeltest.FaultReset, false, 0, ""},
		{blaxeltest.FaultInvalidGrant, true, 0, "invalid_grant"},
		{blaxeltest.FaultInvalidClient, true, 0, "invalid_client"},
	} {
		api := blaxeltest.New(0)
		cc := api.AddClient("sa", "secret")
		api.SetRetryAfter(7)
		api.SetFault(tc.fault, 1)
		_, err := (&Blaxel{}).ClientCredentials(ctx(t), api.Base, cc)
		api.Close()
		var e *Error
		if !errors.As(err, &e) || e.Permanent != tc.permanent || e.RetryAfter != tc.retryAfter || e.Code != tc.code {
			t.Errorf("fault %d: %#v, want permanent %v, retry after %v, code %q", tc.fault, err, tc.permanent, tc.retryAfter, tc.code)
		}
		if err != nil && (strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), cc)) {
			t.Errorf("fault %d: the error quotes a secret: %v", tc.fault, err)
		}
	}
}

func TestDeviceLoginPollsUntilApproved(t *testing.T) {
	old := SlowDownStep
	SlowDownStep = 50 * time.Millisecond
	defer func() { SlowDownStep = old }()
	api := blaxeltest.New(0)
	defer api.Close()
	api.SetSlowDownAt(2)
	x := &Blaxel{}
	da, err := x.DeviceAuth(ctx(t), api.Base)
	if err != nil || da.UserCode == "" || da.VerificationURI == "" {
		t.Fatalf("device auth: %+v, %v", da, err)
	}
	da.Interval = 0 // poll every second: WaitDevice's floor
	var retries atomic.Int32
	go func() {
		time.Sleep(2500 * time.Millisecond)
		api.ApproveDevice(da.UserCode, true)
	}()
	tok, err := WaitDevice(ctx(t), x, api.Base, da, func(error) { retries.Add(1) })
	if err != nil || tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("wait: %v", err)
	}
	if n := api.Count("device_code"); n < 3 {
		t.Fatalf("%d polls; want pending, slow_down, then the token", n)
	}
	if retries.Load() != 0 {
		t.Fatalf("pending and slow_down were taken for failures")
	}
	// A denied login ends with a permanent error.
	da2, _ := x.DeviceAuth(ctx(t), api.Base)
	da2.Interval = 0
	api.ApproveDevice(da2.UserCode, false)
	if _, err := WaitDevice(ctx(t), x, api.Base, da2, nil); !IsPermanent(err) {
		t.Fatalf("denied: %v, want a permanent error", err)
	}
}

// oauthServer is a minimal RFC 6749 token endpoint: form-encoded grants, client authentication
// in the header or in the body, OIDC discovery. It records what it was sent.
type oauthServer struct {
	*httptest.Server
	forms []map[string]string
	auths []string
}

func newOAuthServer(t *testing.T) *oauthServer {
	s := &oauthServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": s.URL, "token_endpoint": s.URL + "/token"})
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
			http.Error(w, "form expected, got "+ct, 400)
			return
		}
		_ = r.ParseForm()
		f := map[string]string{}
		for k := range r.PostForm {
			f[k] = r.PostForm.Get(k)
		}
		s.forms = append(s.forms, f)
		s.auths = append(s.auths, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		if f["refresh_token"] == "revoked" {
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"revoked"}`))
			return
		}
		now := time.Now().Unix()
		claims, _ := json.Marshal(map[string]int64{"iat": now, "exp": now + 600})
		jwt := "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString(claims) + ".sig"
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": jwt, "token_type": "Bearer", "expires_in": 600, "refresh_token": "next"})
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func TestOAuth2SpeaksRFC6749(t *testing.T) {
	srv := newOAuthServer(t)
	cc := base64.StdEncoding.EncodeToString([]byte("cid:csecret"))

	basic := &OAuth2{Issuer: srv.URL, AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := basic.ClientCredentials(ctx(t), "", cc)
	if err != nil || tok.Lifetime() != 10*time.Minute {
		t.Fatalf("client credentials (basic, discovered): %v", err)
	}
	if srv.forms[0]["grant_type"] != "client_credentials" || srv.forms[0]["client_secret"] != "" || !strings.HasPrefix(srv.auths[0], "Basic ") {
		t.Fatalf("client_secret_basic sent %v with Authorization %q", srv.forms[0], srv.auths[0])
	}

	post := &OAuth2{TokenURL: srv.URL + "/token", AuthStyle: oauth2.AuthStyleInParams, ClientID: "blx", ClientSecret: "s"}
	if _, err := post.ClientCredentials(ctx(t), "", cc); err != nil {
		t.Fatal(err)
	}
	if f := srv.forms[1]; f["client_id"] != "cid" || f["client_secret"] != "csecret" || srv.auths[1] != "" {
		t.Fatalf("client_secret_post sent %v with Authorization %q", f, srv.auths[1])
	}
	tok, err = post.Refresh(ctx(t), "", "rt-1", "")
	if err != nil || tok.RefreshToken != "next" {
		t.Fatalf("refresh: %v", err)
	}
	if f := srv.forms[2]; f["grant_type"] != "refresh_token" || f["refresh_token"] != "rt-1" || f["client_id"] != "blx" {
		t.Fatalf("refresh sent %v", f)
	}
	if _, err := post.Refresh(ctx(t), "", "revoked", ""); !IsPermanent(err) || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("a revoked refresh token: %v, want a permanent invalid_grant", err)
	}
	// Without a token URL or an issuer, the endpoint is {base}/oauth/token.
	if _, err := (&OAuth2{}).ClientCredentials(ctx(t), srv.URL+"/v0", cc); err == nil {
		t.Fatal("a base without /oauth/token answered")
	}
}

func TestJWTTimesAndClientCredentials(t *testing.T) {
	claims := base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1900000600,"iat":1900000000}`))
	exp, iat, ok := JWTTimes("h." + claims + ".s")
	if !ok || exp.Unix() != 1900000600 || iat.Unix() != 1900000000 {
		t.Fatalf("JWTTimes: %v %v %v", exp, iat, ok)
	}
	for _, bad := range []string{"", "opaque", "a.b", "a.%%%.c", "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"iat":1}`)) + ".c"} {
		if _, _, ok := JWTTimes(bad); ok {
			t.Errorf("JWTTimes(%q) read an expiry", bad)
		}
	}
	enc := base64.StdEncoding.EncodeToString([]byte("id:sec:ret"))
	if BasicValue(enc) != enc || BasicValue("id:sec:ret") != enc {
		t.Error("BasicValue does not give base64 of id:secret for both forms")
	}
	if BasicValue(" opaque ") != "opaque" {
		t.Error("BasicValue changed a value that is neither form (beyond trimming it)")
	}
	for _, form := range []string{enc, "id:sec:ret", " " + enc + "\n"} {
		if id, secret, ok := SplitClientCredentials(form); !ok || id != "id" || secret != "sec:ret" {
			t.Errorf("SplitClientCredentials(%q): %q %q %v", form, id, secret, ok)
		}
	}
	if _, _, ok := SplitClientCredentials("no-colon"); ok {
		t.Error("SplitClientCredentials accepted a value without a colon")
	}
}
