package token

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

func near(a, b, within time.Duration) bool { return (a - b).Abs() <= within }

// Against an issuer whose clock is off ours, the token's lifetime is what it was issued for,
// the skew is measured, and the local expiry is the issuer's exp on our clock, never later.
func TestBlaxelMeasuresSkewAndLocalExpiry(t *testing.T) {
	for _, off := range []time.Duration{0, 2 * time.Hour, -2 * time.Hour, 50 * time.Minute, -90 * time.Minute} {
		api := blaxeltest.New(2 * time.Hour)
		defer api.Close()
		api.SetClockOffset(off)
		cc := api.AddClient("sa", "secret")
		tok, err := (&Blaxel{}).ClientCredentials(ctx(t), api.Base, cc)
		if err != nil {
			t.Fatal(err)
		}
		if tok.Lifetime() != 2*time.Hour {
			t.Errorf("issuer %v off: lifetime %v, want 2h", off, tok.Lifetime())
		}
		skew, ok := tok.Skew()
		if !ok || !near(skew, -off, 2*time.Second) {
			t.Errorf("issuer %v off: skew %v %v, want %v", off, skew, ok, -off)
		}
		local := tok.LocalExpiry()
		if off == 0 {
			if !local.Equal(tok.Expiry) {
				t.Errorf("agreeing clocks: local expiry %v, want the exp %v", local, tok.Expiry)
			}
			continue
		}
		// Never later than exp on our clock, and at most a second and the exchange early.
		if d := tok.Expiry.Add(-off).Sub(local); d < 0 || d > 2*time.Second {
			t.Errorf("issuer %v off: local expiry %v, want exp on our clock %v, never later", off, local, tok.Expiry.Add(-off))
		}
	}
}

// answering is a token endpoint that answers every request with body and, when date is not
// zero, that Date header (none at all otherwise).
func answering(t *testing.T, body map[string]any, date time.Time) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if date.IsZero() {
			w.Header()["Date"] = nil // net/http adds none then
		} else {
			w.Header().Set("Date", date.UTC().Format(http.TimeFormat))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

func jwtWith(claims map[string]int64) string {
	c, _ := json.Marshal(claims)
	return "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString(c) + ".sig"
}

func TestTimesOfEachKindOfAnswer(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	u := func(t time.Time) int64 { return t.Unix() }
	for _, tc := range []struct {
		name     string
		body     map[string]any
		date     time.Time
		life     time.Duration
		skew     time.Duration // want, when skewOK
		skewOK   bool
		expiryAt time.Duration // want LocalExpiry − now, within 2 s
	}{
		{"iat and exp, no Date, issuer 2h behind", map[string]any{"access_token": jwtWith(map[string]int64{"iat": u(now.Add(-2 * time.Hour)), "exp": u(now)})},
			time.Time{}, 2 * time.Hour, 2 * time.Hour, true, 2 * time.Hour},
		{"exp and expires_in, no iat", map[string]any{"access_token": jwtWith(map[string]int64{"exp": u(now.Add(time.Hour))}), "expires_in": 3600},
			time.Time{}, time.Hour, 0, true, time.Hour},
		{"exp only, Date 2h ahead", map[string]any{"access_token": jwtWith(map[string]int64{"exp": u(now.Add(3 * time.Hour))})},
			now.Add(2 * time.Hour), time.Hour, -2 * time.Hour, true, time.Hour},
		{"exp only, nothing else", map[string]any{"access_token": jwtWith(map[string]int64{"exp": u(now.Add(time.Hour))})},
			time.Time{}, time.Hour, 0, false, time.Hour},
		{"opaque, Date 2h behind", map[string]any{"access_token": "opaque", "expires_in": "600"},
			now.Add(-2 * time.Hour), 10 * time.Minute, 2 * time.Hour, true, 10 * time.Minute},
		// A token issued an hour before it was handed out (a cache in front of the issuer):
		// what is left of it, not its whole lifetime from now.
		{"a cached token", map[string]any{"access_token": jwtWith(map[string]int64{"iat": u(now.Add(-time.Hour)), "exp": u(now.Add(time.Hour))})},
			now, 2 * time.Hour, 0, true, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := answering(t, tc.body, tc.date)
			tok, err := (&Blaxel{}).Refresh(ctx(t), base, "rt", "")
			if err != nil {
				t.Fatal(err)
			}
			if !near(tok.Lifetime(), tc.life, 2*time.Second) {
				t.Errorf("lifetime %v, want %v", tok.Lifetime(), tc.life)
			}
			if skew, ok := tok.Skew(); ok != tc.skewOK || ok && !near(skew, tc.skew, 2*time.Second) {
				t.Errorf("skew %v %v, want %v %v", skew, ok, tc.skew, tc.skewOK)
			}
			if got := tok.LocalExpiry().Sub(now); !near(got, tc.expiryAt, 2*time.Second) {
				t.Errorf("local expiry %v from now, want %v", got, tc.expiryAt)
			}
		})
	}
}

// x/oauth2 does not hand back the answer's headers: the Date is read on the way.
func TestOAuth2ReadsTheDateHeader(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", now.Add(-2*time.Hour).UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": jwtWith(map[string]int64{"iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}), "token_type": "Bearer", "expires_in": 3600})
	}))
	defer srv.Close()
	cc := base64.StdEncoding.EncodeToString([]byte("cid:csecret"))
	tok, err := (&OAuth2{TokenURL: srv.URL}).ClientCredentials(ctx(t), "", cc)
	if err != nil {
		t.Fatal(err)
	}
	if skew, ok := tok.Skew(); !ok || !near(skew, 2*time.Hour, 2*time.Second) || tok.Date.IsZero() {
		t.Fatalf("skew %v %v (Date %v), want 2h from the Date header", skew, ok, tok.Date)
	}
	if got := tok.LocalExpiry().Sub(now); !near(got, time.Hour, 2*time.Second) {
		t.Fatalf("local expiry %v from now, want 1h", got)
	}
}
