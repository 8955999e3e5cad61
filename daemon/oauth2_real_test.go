//go:build real

package daemon_test

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/internal/testkit/hydratest"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources/blconfig"
)

// These tests run the daemon against Ory Hydra, a real OAuth 2.0 server nobody here wrote, to
// show that the RFC 6749 client is correct: form-encoded grants, both client authentication
// methods, discovery, JWT expiry and refresh-token rotation.

func TestHydraClientCredentials(t *testing.T) {
	h := hydratest.Start(t, hydratest.Options{AccessTokenTTL: 10 * time.Minute})
	for _, tc := range []struct {
		name   string
		method string
		style  oauth2.AuthStyle
		discov bool
	}{
		{"client_secret_basic with discovery", hydratest.AuthBasic, oauth2.AuthStyleInHeader, true},
		{"client_secret_post with a fixed token URL", hydratest.AuthPost, oauth2.AuthStyleInParams, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, secret := h.CreateClient(t, tc.method, "client_credentials")
			x := &token.OAuth2{AuthStyle: tc.style}
			if tc.discov {
				x.Issuer = h.IssuerURL()
			} else {
				x.TokenURL = h.TokenURL()
			}
			cc := base64.StdEncoding.EncodeToString([]byte(id + ":" + secret))
			td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=idp", "BL_CLIENT_CREDENTIALS=" + cc}, Mutate: func(c *daemon.Config) { c.Tokens = x }})
			var wg sync.WaitGroup
			got := make([]string, 40)
			for i := range got {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := td.Do(t, ipc.KeyAction, ipc.ActionGet)
					if err == nil {
						got[i] = resp.Value(ipc.KeyToken)
					}
				}()
			}
			wg.Wait()
			for _, g := range got {
				if g == "" || g != got[0] {
					t.Fatal("concurrent callers did not all get the one token")
				}
			}
			exp, iat, ok := token.JWTTimes(got[0])
			if !ok || exp.Sub(iat) != 10*time.Minute {
				t.Fatalf("Hydra's JWT: exp-iat = %v (ok=%v), want 10m", exp.Sub(iat), ok)
			}
			st := td.Broker().Status()
			if len(st) != 1 || st[0].Exchanges != 1 {
				t.Fatalf("broker status %+v, want one credential exchanged once", st)
			}
		})
	}
}

func TestHydraBackgroundRefresh(t *testing.T) {
	h := hydratest.Start(t, hydratest.Options{AccessTokenTTL: 12 * time.Second})
	id, secret := h.CreateClient(t, hydratest.AuthBasic, "client_credentials")
	cc := base64.StdEncoding.EncodeToString([]byte(id + ":" + secret))
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=idp", "BL_CLIENT_CREDENTIALS=" + cc}, Mutate: func(c *daemon.Config) {
		c.Tokens = &token.OAuth2{TokenURL: h.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader}
		c.RefreshLeft, c.MinTTL, c.Tick = 0.5, 2*time.Second, 100*time.Millisecond
	}})
	first := td.Token(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		tok := td.Token(t)
		if !tok.Expiry.After(time.Now()) {
			t.Fatal("served an expired token")
		}
		if tok.Token != first.Token {
			if time.Until(first.Expiry) <= 0 {
				t.Fatal("the first token had expired before the refresh landed")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no background refresh within 20s of a 12s token")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestHydraRefreshGrantRotatesAndPersists(t *testing.T) {
	h := hydratest.Start(t, hydratest.Options{AccessTokenTTL: 10 * time.Minute})
	id, secret := h.CreateAuthCodeClient(t, hydratest.AuthBasic)
	_, rt := h.LoginSession(t, id, secret)
	cfg := "context:\n  workspace: idp\nworkspaces:\n- name: idp\n  credentials:\n    refresh_token: " + rt + "\ntracking: false\n"
	td := daemontest.Start(t, daemontest.Options{BLConfig: cfg, Mutate: func(c *daemon.Config) {
		c.Tokens = &token.OAuth2{TokenURL: h.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader, ClientID: id, ClientSecret: secret}
	}})
	tok := td.Token(t)
	if tok.Kind != ipc.KindLogin {
		t.Fatalf("kind %s", tok.Kind)
	}
	c, err := blconfig.Read(filepath.Join(td.Home, ".blaxel", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.Workspace("idp")
	if w.Credentials.AccessToken != tok.Token || w.Credentials.RefreshToken == "" || w.Credentials.RefreshToken == rt {
		t.Fatal("the rotated refresh token and the new access token were not written back")
	}
	// The persisted refresh token works for the next refresh. (Checked first: Hydra revokes the
	// whole chain once an old token is reused.)
	_, err = (&token.OAuth2{TokenURL: h.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader, ClientID: id, ClientSecret: secret}).Refresh(t.Context(), "", w.Credentials.RefreshToken, "")
	if err != nil {
		t.Fatalf("the persisted refresh token does not work: %v", err)
	}
	// Hydra rotates refresh tokens: the old one is now refused, so persisting the new one was
	// what kept the session alive.
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	req, _ := http.NewRequest(http.MethodPost, h.TokenURL(), bytes.NewBufferString(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatal("Hydra accepted the old refresh token again; the rotation premise of this test is wrong")
	}
}

func TestHydraRefusedClientIsPermanent(t *testing.T) {
	h := hydratest.Start(t, hydratest.Options{})
	id, _ := h.CreateClient(t, hydratest.AuthBasic, "client_credentials")
	cc := base64.StdEncoding.EncodeToString([]byte(id + ":wrong-secret"))
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=idp", "BL_CLIENT_CREDENTIALS=" + cc}, Mutate: func(c *daemon.Config) {
		c.Tokens = &token.OAuth2{TokenURL: h.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader}
	}})
	_, err := td.Do(t, ipc.KeyAction, ipc.ActionGet)
	if ipc.ErrorCode(err) != ipc.CodeAuthFailed {
		t.Fatalf("wrong secret at Hydra: %v, want auth_failed", err)
	}
}
