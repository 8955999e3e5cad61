package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// The refresh periods the schedule draws with the default --refresh-left 0.6, 5 % jitter and
// --min-ttl 30s: a 2 h token is refreshed 42-48 min after it is received, a 60 s one after
// 10.5-12 s. shortestPeriod is the earlier end.
func shortestPeriod(ttl time.Duration) time.Duration {
	switch ttl {
	case 2 * time.Hour:
		return 42 * time.Minute
	case time.Minute:
		return 10500 * time.Millisecond
	}
	panic("no period known for " + ttl.String())
}

// atMostOnePerPeriod fails t when n exchanges over span exceed one per refresh period (the
// first exchange included).
func atMostOnePerPeriod(t *testing.T, what string, n int, span, ttl time.Duration) {
	t.Helper()
	if limit := int(span/shortestPeriod(ttl)) + 1; n > limit {
		t.Errorf("%s: %d exchanges over %v, want at most %d (one per refresh period)", what, n, span, limit)
	}
}

// A min_ttl just under the tokens' lifetime cannot be met without an exchange per request. It
// is refused at once with the limit; the schedule goes on as if it had not been asked; and a
// min_ttl up to the limit is served all the time.
func TestMinTTLJustUnderTheLifetimeCostsNoExtraExchange(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ttl      time.Duration
		minTTL   time.Duration
		step     time.Duration
		limit    time.Duration // the largest min_ttl that can be met
		limitMsg string
	}{
		{"2h tokens, life less 1s", 2 * time.Hour, 2*time.Hour - time.Second, 10 * time.Second, 72*time.Minute + 12*time.Second, "1h12m12s"},
		{"2h tokens, life less 10%", 2 * time.Hour, 108 * time.Minute, 10 * time.Second, 72*time.Minute + 12*time.Second, "1h12m12s"},
		{"60s tokens, life less 1s", time.Minute, 59 * time.Second, 250 * time.Millisecond, 48 * time.Second, "48s"},
		{"60s tokens, life less 10%", time.Minute, 54 * time.Second, 250 * time.Millisecond, 48 * time.Second, "48s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newBrokerFixture(t, nil)
			f.api.SetTTL(tc.ttl)
			span := 6 * tc.ttl
			start := f.clock.Now()
			for el := time.Duration(0); el < span; el += tc.step {
				f.clock.Set(start.Add(el))
				f.tick()
				_, err := f.get(t, tc.minTTL)
				var te *Error
				if el > 0 && (!errors.As(err, &te) || te.Reason != Unmeetable || !strings.Contains(err.Error(), "cannot be met") || !strings.Contains(err.Error(), tc.limitMsg)) {
					t.Fatalf("%v in, min_ttl %v with %v tokens: %v, want it refused at once, naming the %s limit", el, tc.minTTL, tc.ttl, err, tc.limitMsg)
				}
			}
			atMostOnePerPeriod(t, "min_ttl "+tc.minTTL.String(), f.api.Count(""), span, tc.ttl)

			// The limit itself is met at every moment, by the scheduled refreshes alone.
			g := newBrokerFixture(t, nil)
			g.api.SetTTL(tc.ttl)
			start = g.clock.Now()
			for el := time.Duration(0); el < span; el += tc.step {
				g.clock.Set(start.Add(el))
				g.tick()
				s, err := g.get(t, tc.limit)
				if err != nil {
					t.Fatalf("%v in, min_ttl %v (the limit) with %v tokens: %v", el, tc.limit, tc.ttl, err)
				}
				if left := s.Expiry.Sub(g.clock.Now()); left < tc.limit {
					t.Fatalf("%v in: served %v left for min_ttl %v", el, left, tc.limit)
				}
			}
			atMostOnePerPeriod(t, "min_ttl at the limit", g.api.Count(""), span, tc.ttl)
		})
	}
}

// With the issuer's clock two hours off the daemon's, either way, an idle credential is
// refreshed once per period as with agreeing clocks, every token served is valid on the
// issuer's clock with min_ttl left, and the expiry handed out is on the daemon's clock.
func TestSkewedIssuerClock(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  time.Duration // the issuer's clock less the daemon's
		ttl  time.Duration
		step time.Duration
	}{
		{"agreeing clocks, 2h tokens", 0, 2 * time.Hour, 10 * time.Second},
		{"issuer 2h ahead, 2h tokens", 2 * time.Hour, 2 * time.Hour, 10 * time.Second},
		{"issuer 2h behind, 2h tokens", -2 * time.Hour, 2 * time.Hour, 10 * time.Second},
		{"issuer 2h ahead, 60s tokens", 2 * time.Hour, time.Minute, 250 * time.Millisecond},
		{"issuer 2h behind, 60s tokens", -2 * time.Hour, time.Minute, 250 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newBrokerFixture(t, nil)
			f.api.SetTTL(tc.ttl)
			f.api.SetNow(func() time.Time { return f.clock.Now().Add(tc.off) })
			span := 6 * tc.ttl
			start := f.clock.Now()
			var firstRefresh time.Duration
			for el := time.Duration(0); el < span; el += tc.step {
				f.clock.Set(start.Add(el))
				f.tick()
				if firstRefresh == 0 && f.api.Count("") > 1 {
					firstRefresh = el
				}
				s, err := f.get(t, 0)
				if err != nil {
					t.Fatalf("%v in: %v", el, err)
				}
				exp, _, _ := token.JWTTimes(s.Token)
				if left := exp.Sub(f.api.Now()); left < 30*time.Second {
					t.Fatalf("%v in: served a token with %v left on the issuer's clock", el, left)
				}
				// The expiry handed out is the issuer's exp moved onto the daemon's clock (a second
				// early at most: the Date header is whole seconds).
				if d := exp.Add(-tc.off).Sub(s.Expiry); d < 0 || d > 2*time.Second {
					t.Fatalf("%v in: expiry %v, want the exp on the daemon's clock, %v", el, s.Expiry, exp.Add(-tc.off))
				}
			}
			atMostOnePerPeriod(t, "idle", f.api.Count(""), span, tc.ttl)
			// Refreshed on the schedule agreeing clocks give: 42-48 min after receipt for 2 h
			// tokens, 10.5-12 s for 60 s ones (one step late at most).
			if p := shortestPeriod(tc.ttl); firstRefresh < p || firstRefresh > p*48/42+tc.step {
				t.Errorf("first refresh %v after the first exchange, want %v to %v", firstRefresh, p, p*48/42)
			}
			checkSkewShown(t, f, -tc.off)
		})
	}
}

// A front end whose Date disagrees with the clock that signs the tokens makes one of them
// wrong, and the earlier expiry is the one served. With the Date 2 h ahead of a 2 h token's
// iat, the endpoint's own clock says every token is expired when it is handed out: none is
// served, each refusal names the clock, and the credential is still exchanged at most once per
// period. With the Date 2 h behind, every token is served with its exp as expiry.
func TestDateDisagreeingWithTheToken(t *testing.T) {
	for _, skew := range []time.Duration{2 * time.Hour, -2 * time.Hour} {
		f := newBrokerFixture(t, nil)
		f.api.SetDateSkew(skew)
		span := 12 * time.Hour
		start := f.clock.Now()
		served := 0
		for el := time.Duration(0); el < span; el += 10 * time.Second {
			f.clock.Set(start.Add(el))
			f.tick()
			s, err := f.get(t, 0)
			if skew > 0 {
				if err == nil {
					t.Fatalf("Date %v off: %v in, served a token expired on the endpoint's Date (expiry %v, %v from now)", skew, el, s.Expiry, s.Expiry.Sub(f.clock.Now()))
				}
				var te *Error
				if !errors.As(err, &te) || te.Reason != TooShort || !strings.Contains(err.Error(), "this machine's clock is 2h0m0s behind the token endpoint's") {
					t.Fatalf("Date %v off: %v in: %v, want the token refused as too short, naming the clock", skew, el, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("Date %v off: %v in: %v", skew, el, err)
			}
			served++
			if exp, _, _ := token.JWTTimes(s.Token); s.Expiry.After(exp) || exp.Sub(f.api.Now()) < 30*time.Second {
				t.Fatalf("Date %v off: %v in, served expiry %v for a token with exp %v (%v left)", skew, el, s.Expiry, exp, exp.Sub(f.api.Now()))
			}
		}
		atMostOnePerPeriod(t, "Date "+skew.String()+" off the tokens", f.api.Count(""), span, 2*time.Hour)
		t.Logf("Date %v off the tokens: %d exchanges over %v, %d of %d gets served", skew, f.api.Count(""), span, served, int(span/(10*time.Second)))
	}
}

// A bl login session's own access token, read from the config before any exchange, is not
// served past the issuer's exp however far the daemon's clock is behind: it cannot live more
// than its lifetime from now.
func TestSourceTokenFromAnIssuerAheadIsNotServedPastItsExpiry(t *testing.T) {
	f := newBrokerFixture(t, nil)
	f.api.SetNow(func() time.Time { return f.clock.Now().Add(2 * time.Hour) })
	access, refresh := f.api.NewSession("alice", "dc")
	cred := &sources.Credential{Workspace: "acme", Kind: ipc.KindLogin, AccessToken: access, RefreshToken: refresh, DeviceCode: "dc", BaseURL: f.api.Base,
		Source: sources.Provenance{Kind: sources.SourceBLConfig, Where: "config.yaml"}}
	ctx := context.Background()
	start := f.clock.Now()
	for el := time.Duration(0); el < 6*time.Hour; el += 10 * time.Second {
		f.clock.Set(start.Add(el))
		f.b.Tick()
		f.b.Wait()
		s, err := f.b.Get(ctx, cred, 0, true)
		if err != nil {
			t.Fatalf("%v in: %v", el, err)
		}
		if exp, _, _ := token.JWTTimes(s.Token); exp.Sub(f.api.Now()) < 30*time.Second {
			t.Fatalf("%v in: served a token with %v left on the issuer's clock", el, exp.Sub(f.api.Now()))
		}
	}
	atMostOnePerPeriod(t, "session", f.api.Count(""), 6*time.Hour, 2*time.Hour)
}

// git erases a token the API answered 401 for: the next get exchanges at once. A second erase
// in the same period does not: a new token that did not cure the 401 a minute ago will not now.
func TestEraseBringsOneRefreshForwardPerPeriod(t *testing.T) {
	f := newBrokerFixture(t, nil)
	first := f.mustGet(t)
	f.clock.Add(time.Minute)
	if !f.b.Erase(f.cred, first.Token) {
		t.Fatal("the first erase did not drop the token")
	}
	second := f.mustGet(t)
	if second.Token == first.Token || f.api.Count("") != 2 {
		t.Fatalf("after an erase: %d exchanges, same token %v", f.api.Count(""), second.Token == first.Token)
	}
	for i := 0; i < 100; i++ {
		f.clock.Add(10 * time.Second)
		f.b.Erase(f.cred, "")
		if got := f.mustGet(t); got.Token != second.Token {
			t.Fatalf("erase %d in the same period brought another token", i+2)
		}
	}
	if n := f.api.Count(""); n != 2 {
		t.Fatalf("100 more erases within one period made %d exchanges, want none", n-2)
	}
	// The period over (the token was refreshed on schedule), an erase works again.
	f.clock.Add(40 * time.Minute)
	f.tick()
	third := f.mustGet(t)
	if third.Token == second.Token {
		t.Fatal("no refresh on schedule")
	}
	if !f.b.Erase(f.cred, third.Token) || f.mustGet(t).Token == third.Token {
		t.Fatal("an erase in the next period did not bring a new token")
	}
}

// checkSkewShown fails t unless the status shows the daemon's clock skew (to the second) and
// the tokens' lifetime.
func checkSkewShown(t *testing.T, f *brokerFixture, skew time.Duration) {
	t.Helper()
	st := f.b.Status()
	if len(st) != 1 {
		t.Fatalf("status: %d entries", len(st))
	}
	if got := time.Duration(st[0].ClockSkew) * time.Second; (got - skew).Abs() > time.Second {
		t.Errorf("status shows a clock skew of %v, want %v", got, skew)
	}
	if st[0].Lifetime <= 0 {
		t.Errorf("status shows no lifetime")
	}
}
