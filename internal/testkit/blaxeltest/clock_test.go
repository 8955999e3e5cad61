package blaxeltest

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func claims(t *testing.T, tok string) (iat, exp time.Time) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Iat, Exp int64 }
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return time.Unix(c.Iat, 0), time.Unix(c.Exp, 0)
}

// An offset clock moves everything an issuer's clock decides: the token's iat and exp, the
// Date of the answer, and when the API side calls a token expired.
func TestClockOffsetMovesIssueDateAndExpiry(t *testing.T) {
	for _, off := range []time.Duration{2 * time.Hour, -2 * time.Hour} {
		s := New(time.Minute)
		defer s.Close()
		s.SetClockOffset(off)
		cc := s.AddClient("sa", "secret")
		req, _ := http.NewRequest("POST", s.Base+"/oauth/token", strings.NewReader(`{"grant_type":"client_credentials"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Basic "+cc)
		before := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		after := time.Now()
		date, err := http.ParseTime(resp.Header.Get("Date"))
		if err != nil {
			t.Fatalf("offset %v: Date %q: %v", off, resp.Header.Get("Date"), err)
		}
		if date.Before(before.Add(off).Truncate(time.Second)) || date.After(after.Add(off)) {
			t.Errorf("offset %v: Date %v, want between %v and %v", off, date, before.Add(off), after.Add(off))
		}
		iat, exp := claims(t, body.AccessToken)
		if iat.Before(before.Add(off).Truncate(time.Second)) || iat.After(after.Add(off)) || exp.Sub(iat) != time.Minute {
			t.Errorf("offset %v: iat %v exp %v, want iat at the server's now and a minute's life", off, iat, exp)
		}
		// A token that expired a second ago on the server's clock is refused, whatever the
		// real clock says; one issued now is accepted.
		stale := s.TokenExpiring("bob", s.Now().Add(-time.Second), time.Minute)
		if code, b := get(t, s, "/models", map[string]string{"X-Blaxel-Authorization": "Bearer " + stale, "X-Blaxel-Workspace": "w"}); code != 401 || b["error"] != RejectExpired {
			t.Errorf("offset %v: a token expired on the server's clock: %d %v", off, code, b)
		}
		if code, _ := get(t, s, "/models", map[string]string{"X-Blaxel-Authorization": "Bearer " + body.AccessToken, "X-Blaxel-Workspace": "w"}); code != 200 {
			t.Errorf("offset %v: a fresh token was refused: %d", off, code)
		}
	}
}
