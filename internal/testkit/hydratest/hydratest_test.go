//go:build real

package hydratest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/hydratest"
)

type tokenResponse struct {
	AccessToken      string `json:"access_token"`
	RefreshToken     string `json:"refresh_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	Scope            string `json:"scope"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// postToken sends a form-encoded request to the token endpoint the way an
// RFC 6749 client does, authenticating with client_secret_basic or
// client_secret_post.
func postToken(t *testing.T, tokenURL, method, id, secret string, form url.Values) (int, tokenResponse) {
	t.Helper()
	if method == hydratest.AuthPost {
		form.Set("client_id", id)
		form.Set("client_secret", secret)
	}
	req, err := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if method == hydratest.AuthBasic {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	c := &http.Client{Timeout: 15 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", tokenURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatalf("token endpoint answered %s with non-JSON body: %v", resp.Status, err)
	}
	return resp.StatusCode, tr
}

func claims(t *testing.T, token string) map[string]any {
	t.Helper()
	c, err := hydratest.JWTClaims(token)
	if err != nil {
		t.Fatalf("access token: %v", err)
	}
	return c
}

func intClaim(t *testing.T, c map[string]any, name string) int64 {
	t.Helper()
	n, ok := c[name].(json.Number)
	if !ok {
		t.Fatalf("claim %q missing or not a number: %v", name, c[name])
	}
	v, err := n.Int64()
	if err != nil {
		t.Fatalf("claim %q: %v", name, err)
	}
	return v
}

// checkLifetime asserts exp - iat equals the configured access token TTL,
// give or take one second: Hydra (fosite) computes exp from the time it
// handles the request, rounded to the second for the authorization code and
// refresh grants and not rounded for client credentials, while iat is the
// time the JWT is minted, truncated to the second. exp - iat is therefore
// TTL-1, TTL or TTL+1 (TestLifetimeSpread shows the spread).
func checkLifetime(t *testing.T, c map[string]any, ttl time.Duration) int64 {
	t.Helper()
	exp, iat := intClaim(t, c, "exp"), intClaim(t, c, "iat")
	got := time.Duration(exp-iat) * time.Second
	if d := got - ttl; d < -time.Second || d > time.Second {
		t.Errorf("exp - iat = %v, want %v (within 1s)", got, ttl)
	}
	now := time.Now().Unix()
	if iat < now-60 || iat > now+5 {
		t.Errorf("iat %d is far from now %d", iat, now)
	}
	return exp - iat
}

func TestClientCredentials(t *testing.T) {
	const ttl = 90 * time.Second
	srv := hydratest.Start(t, hydratest.Options{AccessTokenTTL: ttl})
	if srv.AccessTokenTTL() != ttl {
		t.Fatalf("AccessTokenTTL() = %v, want %v", srv.AccessTokenTTL(), ttl)
	}
	for _, method := range []string{hydratest.AuthBasic, hydratest.AuthPost} {
		t.Run(method, func(t *testing.T) {
			id, secret := srv.CreateClient(t, method, "client_credentials")

			status, tr := postToken(t, srv.TokenURL(), method, id, secret, url.Values{"grant_type": {"client_credentials"}})
			if status != http.StatusOK {
				t.Fatalf("token request: HTTP %d: %s: %s", status, tr.Error, tr.ErrorDescription)
			}
			if !strings.EqualFold(tr.TokenType, "bearer") {
				t.Errorf("token_type = %q, want bearer", tr.TokenType)
			}
			if tr.ExpiresIn <= 0 || tr.ExpiresIn > int64(ttl/time.Second) {
				t.Errorf("expires_in = %d, want in (0, %d]", tr.ExpiresIn, int64(ttl/time.Second))
			}
			if tr.RefreshToken != "" {
				t.Errorf("client_credentials returned a refresh token")
			}
			c := claims(t, tr.AccessToken)
			checkLifetime(t, c, ttl)
			if iss, _ := c["iss"].(string); strings.TrimSuffix(iss, "/") != srv.IssuerURL() {
				t.Errorf("iss = %q, want %q", iss, srv.IssuerURL())
			}
			if cid, _ := c["client_id"].(string); cid != id {
				t.Errorf("client_id claim = %q, want the client's id", cid)
			}

			// A wrong secret is refused.
			status, tr = postToken(t, srv.TokenURL(), method, id, secret+"x", url.Values{"grant_type": {"client_credentials"}})
			if status != http.StatusUnauthorized || tr.Error != "invalid_client" {
				t.Errorf("wrong secret: HTTP %d %q, want 401 invalid_client", status, tr.Error)
			}
		})
	}
}

func TestDefaultTTL(t *testing.T) {
	srv := hydratest.Start(t, hydratest.Options{})
	id, secret := srv.CreateClient(t, "")
	status, tr := postToken(t, srv.TokenURL(), hydratest.AuthBasic, id, secret, url.Values{"grant_type": {"client_credentials"}})
	if status != http.StatusOK {
		t.Fatalf("token request: HTTP %d: %s: %s", status, tr.Error, tr.ErrorDescription)
	}
	checkLifetime(t, claims(t, tr.AccessToken), time.Minute)
}

func TestLoginSessionAndRefresh(t *testing.T) {
	const ttl = 2 * time.Minute
	srv := hydratest.Start(t, hydratest.Options{AccessTokenTTL: ttl})
	for _, method := range []string{hydratest.AuthBasic, hydratest.AuthPost} {
		t.Run(method, func(t *testing.T) {
			id, secret := srv.CreateAuthCodeClient(t, method)
			access, refresh := srv.LoginSession(t, id, secret)
			if refresh == "" {
				t.Fatal("LoginSession returned no refresh token")
			}
			c := claims(t, access)
			checkLifetime(t, c, ttl)
			if sub, _ := c["sub"].(string); sub != "test-user" {
				t.Errorf("sub = %q, want test-user", sub)
			}

			refreshForm := func(rt string) url.Values {
				return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
			}

			// Refresh: a new access token, and (Hydra rotates) a new refresh token.
			status, tr := postToken(t, srv.TokenURL(), method, id, secret, refreshForm(refresh))
			if status != http.StatusOK {
				t.Fatalf("refresh: HTTP %d: %s: %s", status, tr.Error, tr.ErrorDescription)
			}
			if tr.AccessToken == "" || tr.AccessToken == access {
				t.Fatal("refresh did not return a new access token")
			}
			checkLifetime(t, claims(t, tr.AccessToken), ttl)
			if sub, _ := claims(t, tr.AccessToken)["sub"].(string); sub != "test-user" {
				t.Errorf("refreshed token sub = %q, want test-user", sub)
			}
			if tr.RefreshToken == "" || tr.RefreshToken == refresh {
				t.Fatal("Hydra did not rotate the refresh token")
			}
			rotated := tr.RefreshToken

			// The rotated-out refresh token no longer works.
			status, tr = postToken(t, srv.TokenURL(), method, id, secret, refreshForm(refresh))
			if status == http.StatusOK {
				t.Fatal("reusing the old refresh token succeeded; want it refused")
			}
			if tr.Error != "invalid_grant" {
				t.Errorf("reusing the old refresh token: HTTP %d %q, want invalid_grant", status, tr.Error)
			}

			// Reuse of a rotated-out token is treated as theft: Hydra also
			// revokes the token family, so the newest refresh token is dead too.
			status, tr = postToken(t, srv.TokenURL(), method, id, secret, refreshForm(rotated))
			if status == http.StatusOK {
				t.Fatal("the newest refresh token still works after reuse of an old one; want the family revoked")
			}
			if tr.Error != "invalid_grant" {
				t.Errorf("newest refresh token after reuse: HTTP %d %q, want invalid_grant", status, tr.Error)
			}
		})
	}
}

func TestRefreshChain(t *testing.T) {
	srv := hydratest.Start(t, hydratest.Options{RefreshTokenTTL: time.Hour})
	id, secret := srv.CreateAuthCodeClient(t, hydratest.AuthBasic)
	_, refresh := srv.LoginSession(t, id, secret)
	// Without reuse, each rotated refresh token works once, in turn.
	for i := 0; i < 3; i++ {
		status, tr := postToken(t, srv.TokenURL(), hydratest.AuthBasic, id, secret,
			url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}})
		if status != http.StatusOK {
			t.Fatalf("refresh %d: HTTP %d: %s: %s", i, status, tr.Error, tr.ErrorDescription)
		}
		if tr.RefreshToken == "" || tr.RefreshToken == refresh {
			t.Fatalf("refresh %d: refresh token not rotated", i)
		}
		refresh = tr.RefreshToken
	}
}

// TestLifetimeSpread mints a series of tokens with each grant and reports
// how exp - iat is spread around the TTL.
func TestLifetimeSpread(t *testing.T) {
	const ttl = time.Minute
	srv := hydratest.Start(t, hydratest.Options{AccessTokenTTL: ttl})

	ccID, ccSecret := srv.CreateClient(t, hydratest.AuthBasic, "client_credentials")
	cc := map[int64]int{}
	for i := 0; i < 15; i++ {
		status, tr := postToken(t, srv.TokenURL(), hydratest.AuthBasic, ccID, ccSecret, url.Values{"grant_type": {"client_credentials"}})
		if status != http.StatusOK {
			t.Fatalf("client_credentials: HTTP %d %s", status, tr.Error)
		}
		cc[checkLifetime(t, claims(t, tr.AccessToken), ttl)]++
		time.Sleep(70 * time.Millisecond)
	}

	id, secret := srv.CreateAuthCodeClient(t, hydratest.AuthBasic)
	access, refresh := srv.LoginSession(t, id, secret)
	rt := map[int64]int{checkLifetime(t, claims(t, access), ttl): 1}
	for i := 0; i < 15; i++ {
		status, tr := postToken(t, srv.TokenURL(), hydratest.AuthBasic, id, secret,
			url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}})
		if status != http.StatusOK {
			t.Fatalf("refresh: HTTP %d %s", status, tr.Error)
		}
		rt[checkLifetime(t, claims(t, tr.AccessToken), ttl)]++
		refresh = tr.RefreshToken
		time.Sleep(70 * time.Millisecond)
	}
	t.Logf("exp-iat in seconds -> count: client_credentials %v; authorization_code+refresh_token %v", cc, rt)
}
