package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/internal/backoff"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

type brokerFixture struct {
	b     *Broker
	api   *blaxeltest.Server
	clock *clock.Fake
	cred  *sources.Credential
}

func newBrokerFixture(t *testing.T, mutate func(*Config)) *brokerFixture {
	t.Helper()
	clock := clock.NewFake(time.Unix(1_900_000_000, 0))
	api := blaxeltest.New(2 * time.Hour)
	t.Cleanup(api.Close)
	api.SetNow(clock.Now)
	cc := api.AddClient("sa", "secret")
	cfg := Config{
		Tokens:  &token.Blaxel{Now: clock.Now},
		Clock:   clock,
		Log:     zerolog.New(zerolog.NewTestWriter(t)),
		Backoff: backoff.Policy{Base: time.Second, Max: 5 * time.Minute},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	b := New(context.Background(), cfg)
	t.Cleanup(b.Wait)
	cred := &sources.Credential{Workspace: "acme", Kind: ipc.KindClientCredentials, ClientCredentials: cc, BaseURL: api.Base,
		Source: sources.Provenance{Kind: sources.SourceDaemonEnv, Where: "BL_CLIENT_CREDENTIALS"}}
	return &brokerFixture{b: b, api: api, clock: clock, cred: cred}
}

func (f *brokerFixture) get(t *testing.T, minTTL time.Duration) (Served, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.b.Get(ctx, f.cred, minTTL, true)
}

func (f *brokerFixture) mustGet(t *testing.T) Served {
	t.Helper()
	s, err := f.get(t, 0)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	return s
}

// tick runs the broker's periodic check and waits for what it started.
func (f *brokerFixture) tick() { f.b.Tick(); f.b.Wait() }

func TestBackgroundRefreshAheadOfEveryBlaxelClient(t *testing.T) {
	f := newBrokerFixture(t, nil)
	first := f.mustGet(t)
	if f.api.Count("") != 1 {
		t.Fatalf("first get: %d exchanges", f.api.Count(""))
	}
	// 2h token: refresh when 60% (72m) is left, up to 5% (6m) earlier for jitter: between 42m
	// and 48m after issue, before the TypeScript SDK (below 50% left, after 60m) would.
	f.clock.Add(41 * time.Minute)
	f.tick()
	if n := f.api.Count(""); n != 1 {
		t.Fatalf("refreshed %d times while over 65%% of the lifetime was left", n-1)
	}
	if got := f.mustGet(t); got.Token != first.Token {
		t.Fatal("token changed before its refresh time")
	}
	f.clock.Add(8 * time.Minute) // 49m: 59% left
	f.tick()
	if n := f.api.Count(""); n != 2 {
		t.Fatalf("after 49m: %d exchanges, want 2", n)
	}
	second := f.mustGet(t)
	if second.Token == first.Token || !second.Expiry.After(first.Expiry) {
		t.Fatal("the refreshed token is not served")
	}
}

// A 60s token with the default 30s min_ttl can be served for 30s only: its refresh must come
// early in that window, or a short outage of the endpoint reaches callers.
func TestShortTokensAreRefreshedEarlyInTheirServableLife(t *testing.T) {
	seen := map[time.Duration]bool{}
	defer func() {
		// The default jitter spreads refreshes issued together: 20 draws are not all the same.
		if len(seen) < 2 {
			t.Errorf("20 refreshes all came %v after issue: no jitter", seen)
		}
	}()
	for i := 0; i < 20; i++ { // the jitter is random: several draws
		f := newBrokerFixture(t, nil)
		f.api.SetTTL(time.Minute)
		f.mustGet(t)
		issued := f.clock.Now()
		for f.api.Count("") == 1 {
			f.clock.Add(500 * time.Millisecond)
			f.tick()
		}
		at := f.clock.Now().Sub(issued)
		seen[at] = true
		// Due when 60-65% of the 30s servable life is left: 10.5s to 12s after issue.
		if at < 10*time.Second || at > 12500*time.Millisecond {
			t.Fatalf("a 60s token was refreshed %v after issue, want 10.5-12s", at)
		}
	}
}

// Between a token's refresh point and the moment it falls under min_ttl lie at least 60 % of
// its servable life (18s of a 60s token with the default 30s min_ttl, 71m of a 2h token): an
// outage of the endpoint shorter than that is never seen by a caller, wherever it falls.
func TestShortOutagesAreNeverSeenByCallers(t *testing.T) {
	for _, tc := range []struct {
		name           string
		ttl, outage    time.Duration
		step, startGap time.Duration
	}{
		{"60s tokens, 15s outages", time.Minute, 15 * time.Second, 500 * time.Millisecond, 2500 * time.Millisecond},
		{"2h tokens, 1h outages", 2 * time.Hour, time.Hour, time.Minute, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for start := time.Duration(0); start < 2*tc.ttl; start += tc.startGap {
				f := newBrokerFixture(t, nil)
				f.api.SetTTL(tc.ttl)
				f.mustGet(t)
				issued := f.clock.Now()
				for el := time.Duration(0); el < 3*tc.ttl; el += tc.step {
					if el >= start && el < start+tc.outage {
						f.api.SetFault(blaxeltest.Fault503, -1)
					} else {
						f.api.SetFault(blaxeltest.FaultNone, 0)
					}
					f.clock.Set(issued.Add(el))
					f.tick()
					if _, err := f.get(t, 0); err != nil {
						t.Fatalf("%v after issue, outage from %v for %v: a caller saw %v", el, start, tc.outage, err)
					}
				}
			}
		})
	}
}

func TestImpossibleMinTTLCostsNoExchangePerRequest(t *testing.T) {
	f := newBrokerFixture(t, func(c *Config) { c.MinTTL = time.Minute })
	f.api.SetTTL(time.Minute)
	for i := 0; i < 300; i++ {
		_, err := f.get(t, 0)
		var te *Error
		// The first call may be served: at the instant of issue the token has its whole minute.
		if i > 0 && (!errors.As(err, &te) || te.Reason != Unmeetable || !strings.Contains(te.Error(), "cannot be met")) {
			t.Fatalf("call %d with min_ttl 60s and 60s tokens: %v", i, err)
		}
		f.clock.Add(50 * time.Millisecond)
	}
	if n := f.api.Count(""); n != 1 {
		t.Fatalf("300 calls asking more life than the endpoint issues made %d exchanges, want 1", n)
	}
	// A request that asks for what a token can give is served at once.
	f.b.cfg.MinTTL = 30 * time.Second
	if _, err := f.get(t, 0); err != nil {
		t.Fatalf("min_ttl 30s after learning 60s tokens: %v", err)
	}
}

func TestMinTTLErrorNeverShowsEqualFigures(t *testing.T) {
	f := newBrokerFixture(t, nil)
	// JWT times are whole seconds: read 0.4s into the second of issue, a 2h token has
	// 1h59m59.6s left, which rounds to the 2h asked for.
	f.clock.Add(400 * time.Millisecond)
	_, err := f.get(t, 2*time.Hour)
	if err == nil || !strings.Contains(err.Error(), "1h59m59s left, less than the 2h0m0s") {
		t.Fatalf("min_ttl 2h with a 2h token issued a moment ago: %v", err)
	}
}

func TestCallersGetTheValidTokenWhileARefreshRuns(t *testing.T) {
	f := newBrokerFixture(t, nil)
	first := f.mustGet(t)
	f.clock.Add(80 * time.Minute) // past the refresh point, 40m of life left
	f.api.SetHang(500 * time.Millisecond)
	f.api.SetFault(blaxeltest.FaultHang, 1)
	start := time.Now()
	got := f.mustGet(t) // starts the refresh in the background
	if got.Token != first.Token {
		t.Fatal("a caller waited for the refresh instead of getting the still-valid token")
	}
	if time.Since(start) > 400*time.Millisecond {
		t.Fatal("the get waited for the slow refresh")
	}
	f.b.Wait()
	if f.mustGet(t).Token == first.Token {
		t.Fatal("the refresh did not land")
	}
}

func TestMinTTLIsNeverUndercut(t *testing.T) {
	f := newBrokerFixture(t, nil)
	first := f.mustGet(t)
	f.clock.Add(100 * time.Minute) // 20m left; the background refresh is due but let it fail
	f.api.SetFault(blaxeltest.Fault503, 1)
	got, err := f.get(t, 10*time.Minute)
	if err != nil || got.Token != first.Token {
		t.Fatalf("min_ttl 10m with 20m left: %v %v, want the cached token", got, err)
	}
	f.b.Wait()
	// Asking for 30m cannot be met by the cached token: the caller waits for a new one.
	f.clock.Add(5 * time.Second) // past the short backoff
	got, err = f.get(t, 30*time.Minute)
	if err != nil {
		t.Fatalf("min_ttl 30m: %v", err)
	}
	if got.Token == first.Token || got.Expiry.Sub(f.clock.Now()) < 30*time.Minute {
		t.Fatalf("served a token with %v left for min_ttl 30m", got.Expiry.Sub(f.clock.Now()))
	}
	// More than a fresh token can give: a clear error, not a short token.
	if _, err := f.get(t, 3*time.Hour); err == nil {
		t.Fatal("min_ttl 3h with 2h tokens was served")
	}
}

func TestExpiredTokenNeverServedAfterSuspend(t *testing.T) {
	f := newBrokerFixture(t, nil)
	f.mustGet(t)
	f.api.SetFault(blaxeltest.FaultReset, -1)
	f.clock.Add(3 * time.Hour) // the laptop slept through the expiry
	_, err := f.get(t, 0)
	var te *Error
	if !errors.As(err, &te) || te.Reason != Failing {
		t.Fatalf("after expiry with the endpoint down: %v, want failing", err)
	}
	f.tick()
	for _, s := range f.b.Status() {
		if !s.Expiry.IsZero() && !s.Expiry.After(f.clock.Now()) {
			t.Fatal("the expired token is still cached after a tick")
		}
	}
	f.api.SetFault(blaxeltest.FaultNone, 0)
	f.clock.Add(10 * time.Minute) // past any backoff
	got := f.mustGet(t)
	if !got.Expiry.After(f.clock.Now().Add(time.Hour)) {
		t.Fatal("after the endpoint came back the token was not renewed")
	}
}

func TestRetriesAreBoundedByRemainingLife(t *testing.T) {
	f := newBrokerFixture(t, func(c *Config) { c.Backoff = backoff.Policy{Base: 30 * time.Second, Max: time.Hour} })
	f.mustGet(t)
	f.api.SetFault(blaxeltest.Fault503, -1)
	f.clock.Add(75 * time.Minute) // refresh due, 45m left
	attempts := 0
	for f.clock.Now().Before(time.Unix(1_900_000_000, 0).Add(2*time.Hour - time.Minute)) {
		before := f.api.Count("")
		f.tick()
		if f.api.Count("") > before {
			attempts++
			st := f.b.Status()[0]
			left := st.Expiry.Sub(f.clock.Now())
			wait := st.NextTry.Sub(f.clock.Now())
			if wait > left/10+time.Second {
				t.Fatalf("with %v of life left the next try waits %v (over a tenth of it)", left, wait)
			}
		}
		f.clock.Add(5 * time.Second)
	}
	if attempts < 5 {
		t.Fatalf("only %d retries in the last 45 minutes of the token's life", attempts)
	}
	// The endpoint returns one minute before expiry: the token is renewed in time.
	f.api.SetFault(blaxeltest.FaultNone, 0)
	for i := 0; i < 12; i++ {
		f.tick()
		f.clock.Add(5 * time.Second)
	}
	got, err := f.get(t, 0)
	if err != nil || got.Expiry.Sub(f.clock.Now()) < time.Hour {
		t.Fatalf("token lost to backoff: %v, %v left", err, got.Expiry.Sub(f.clock.Now()))
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	f := newBrokerFixture(t, nil)
	f.mustGet(t)
	f.api.SetRetryAfter(120)
	f.api.SetFault(blaxeltest.Fault429, 1)
	f.clock.Add(75 * time.Minute)
	f.tick()
	st := f.b.Status()[0]
	if wait := st.NextTry.Sub(f.clock.Now()); wait < 119*time.Second || wait > 121*time.Second {
		t.Fatalf("after 429 with Retry-After: 120 the next try is in %v", wait)
	}
	f.clock.Add(60 * time.Second)
	f.tick()
	if f.api.Count("") != 2 {
		t.Fatal("retried before Retry-After elapsed")
	}
	f.clock.Add(61 * time.Second)
	f.tick()
	if f.api.Count("") != 3 {
		t.Fatal("did not retry after Retry-After elapsed")
	}
}

func TestGarbageAndHTMLAreTransient(t *testing.T) {
	for _, fault := range []blaxeltest.Fault{blaxeltest.FaultGarbage, blaxeltest.FaultHTML, blaxeltest.Fault500, blaxeltest.FaultReset} {
		f := newBrokerFixture(t, nil)
		f.api.SetFault(fault, 1)
		_, err := f.get(t, 0)
		var te *Error
		if !errors.As(err, &te) || te.Reason != Failing {
			t.Fatalf("fault %d: %v, want unavailable", fault, err)
		}
		f.clock.Add(10 * time.Second)
		if _, err := f.get(t, 0); err != nil {
			t.Fatalf("fault %d: not recovered on retry: %v", fault, err)
		}
	}
}

func TestPermanentFailureStopsRetriesUntilTheSourceChanges(t *testing.T) {
	f := newBrokerFixture(t, nil)
	refused := f.b.Refused()
	f.api.SetFault(blaxeltest.FaultInvalidClient, -1)
	_, err := f.get(t, 0)
	var te *Error
	if !errors.As(err, &te) || te.Reason != Refused || !errors.Is(err, te.Cause) || te.Cause == nil {
		t.Fatalf("invalid_client: %v, want refused with the endpoint's error", err)
	}
	for i := 0; i < 10; i++ {
		f.clock.Add(10 * time.Minute)
		f.tick()
		_, _ = f.get(t, 0)
	}
	if n := f.api.Count(""); n != 1 {
		t.Fatalf("a refused credential was tried %d times", n)
	}
	// The refusal was announced once, for the source to be read again.
	select {
	case <-refused:
	default:
		t.Fatal("the refusal was not announced")
	}
	select {
	case <-f.b.Refused():
		t.Fatal("ten more tries of a refused credential announced it again")
	default:
	}
	// The user fixes the secret: the new credential is tried at once.
	f.api.SetFault(blaxeltest.FaultNone, 0)
	fixed := *f.cred
	fixed.ClientCredentials = f.api.AddClient("sa2", "new")
	f.cred = &fixed
	if _, err := f.get(t, 0); err != nil {
		t.Fatalf("after the source changed: %v", err)
	}
}

// TestManyClientsOverADay checks the claim behind the lifecycle: 200 clients asking all day
// cause one exchange per refresh period per credential.
func TestManyClientsOverADay(t *testing.T) {
	f := newBrokerFixture(t, nil)
	const clients = 200
	step := time.Minute
	for elapsed := time.Duration(0); elapsed < 24*time.Hour; elapsed += step {
		for c := 0; c < clients; c += 20 { // a sample of callers every simulated minute
			if _, err := f.get(t, 0); err != nil {
				t.Fatalf("at %v: %v", elapsed, err)
			}
		}
		f.tick()
		f.clock.Add(step)
	}
	n := f.api.Count("")
	// One per refresh period: a 2h token refreshed after 35-40% of its life, i.e. every 42-48
	// minutes, is 30-34 exchanges a day (plus the first).
	if n < 30 || n > 35 {
		t.Fatalf("%d exchanges in 24h, want one per refresh period (30-35)", n)
	}
}

func TestServiceResumesPromptlyAfterALongOutage(t *testing.T) {
	f := newBrokerFixture(t, nil)
	f.mustGet(t)
	f.api.SetFault(blaxeltest.Fault503, -1)
	f.clock.Add(75 * time.Minute)
	// The outage outlasts the token by an hour; every tick that is due tries once.
	for i := 0; i < 2*3600/5; i++ {
		f.tick()
		f.clock.Add(5 * time.Second)
	}
	if _, err := f.get(t, 0); err == nil {
		t.Fatal("served a token through a two-hour outage")
	}
	f.api.SetFault(blaxeltest.FaultNone, 0)
	back := f.clock.Now()
	for i := 0; ; i++ {
		f.tick()
		if s, err := f.get(t, 0); err == nil && s.Expiry.After(f.clock.Now()) {
			break
		}
		if f.clock.Now().Sub(back) > 15*time.Second {
			t.Fatalf("service did not resume within 15s of the endpoint's return")
		}
		f.clock.Add(time.Second)
	}
}
