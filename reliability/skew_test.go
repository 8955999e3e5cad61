//go:build reliability

package reliability

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReliabilitySkewedIssuerClock runs a real daemon against a token endpoint whose clock is
// two hours ahead of the machine's, then one two hours behind. Tokens live 30 s and the daemon
// serves them with 10 s left at least (--min-ttl 10s), so it refreshes one 7-8 s after it
// receives it: its period. Before, the daemon judged the JWT's exp on its own clock: with
// the issuer behind, every token looked expired and it exchanged once a second while idle;
// with the issuer ahead, it never refreshed and served tokens the API refused as expired.
//
// What a user checks: while idle, the exchanges at the endpoint are a period apart; every
// token served is accepted by the API; the expiry handed out is on the machine's clock; status
// shows the skew; the log warns about it once.
func TestReliabilitySkewedIssuerClock(t *testing.T) {
	const (
		ttl      = 30 * time.Second
		minTTL   = 10 * time.Second
		period   = 7 * time.Second // 30 s less the lead at its earliest: 10 s + 65 % of the 20 s servable
		lifetime = 30
	)
	for _, off := range []time.Duration{2 * time.Hour, -2 * time.Hour} {
		t.Run(fmt.Sprintf("issuer %v off", off), func(t *testing.T) {
			t.Parallel()
			ws := "skew-" + randHex(4)
			api := newFakeAPI(t, ttl)
			api.SetClockOffset(off)
			var mu sync.Mutex
			var at []time.Time // when each token request reached the endpoint (the real clock)
			arrived := make(chan struct{}, 64)
			api.setHooks(func(exchange) {
				mu.Lock()
				at = append(at, time.Now())
				mu.Unlock()
				select {
				case arrived <- struct{}{}:
				default: // a wake-up is pending already
				}
			}, nil, nil)
			cc := api.addClient("sa-"+ws, "secret-"+randHex(12))
			d := startDaemon(t, daemonOpts{api: api, args: []string{"--min-ttl", minTTL.String()},
				env: []string{"BL_WORKSPACE=" + ws, "BL_CLIENT_CREDENTIALS=" + cc}})

			// awaitExchanges waits for the endpoint to have seen n token requests in all.
			awaitExchanges := func(n int) {
				t.Helper()
				deadline := time.After(time.Duration(n+2) * 3 * period)
				for {
					mu.Lock()
					got := len(at)
					mu.Unlock()
					if got >= n {
						return
					}
					select {
					case <-arrived:
					case <-deadline:
						t.Fatalf("the daemon made %d exchanges, not %d: it does not refresh on schedule", got, n)
					}
				}
			}
			// spaced checks that no two exchanges came less than a period apart.
			spaced := func(what string) {
				t.Helper()
				mu.Lock()
				defer mu.Unlock()
				for i := 1; i < len(at); i++ {
					if gap := at[i].Sub(at[i-1]); gap < period-50*time.Millisecond {
						t.Fatalf("%s: exchange %d came %v after the one before, less than the %v period (%d exchanges)", what, i+1, gap.Round(time.Millisecond), period, len(at))
					}
				}
			}

			// Idle: the daemon holds the credential itself and keeps it fresh, nobody asks.
			awaitExchanges(4)
			spaced("idle")

			// Serving: every token is one the API accepts, with its expiry on this machine's clock.
			mu.Lock()
			target := len(at) + 3
			mu.Unlock()
			served := 0
			for {
				mu.Lock()
				done := len(at) >= target
				mu.Unlock()
				if done {
					break
				}
				tok, err := d.get("workspace", ws)
				if err != nil {
					t.Fatalf("get: %v", err)
				}
				served++
				if code, body := callAPI(t, api, tok.Token, ws); code != http.StatusOK {
					t.Fatalf("the API refused a served token: %d %v", code, body)
				}
				exp, err := jwtExpiry(tok.Token)
				if err != nil {
					t.Fatal(err)
				}
				// The issuer's exp moved onto this machine's clock: never later, and off by no
				// more than the measurement (the Date header's second and the exchange's time).
				local := exp.Add(-off)
				if tok.Expiry.After(local) || tok.Expiry.Before(local.Add(-ttl/2)) {
					t.Fatalf("served expiry %v; the token's exp on this machine's clock is %v", tok.Expiry, local)
				}
				select {
				case <-arrived: // a refresh: look again at once
				case <-time.After(250 * time.Millisecond):
				}
			}
			spaced("serving")

			// Status shows the skew (the machine's clock less the issuer's) and the lifetime.
			r := runHelper(t, d.socket, d.home, nil, nil, helperBin, "status", "--json")
			var st struct {
				Workspaces []struct {
					Workspace string `json:"workspace"`
					Skew      int64  `json:"clock_skew_seconds"`
					Lifetime  int64  `json:"lifetime_seconds"`
				} `json:"workspaces"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
				t.Fatalf("status --json: %v\n%s", err, r.stdout)
			}
			found := false
			for _, w := range st.Workspaces {
				if w.Workspace != ws {
					continue
				}
				found = true
				if want := int64(-off / time.Second); w.Skew < want-5 || w.Skew > want+5 || w.Lifetime != lifetime {
					t.Errorf("status: clock skew %d s, lifetime %d s; want about %d s and %d s", w.Skew, w.Lifetime, want, lifetime)
				}
			}
			if !found {
				t.Fatalf("status does not list %s:\n%s", ws, r.stdout)
			}
			side := "behind"
			if off < 0 {
				side = "ahead of"
			}
			if r := runHelper(t, d.socket, d.home, nil, nil, helperBin, "status"); !strings.Contains(r.stdout, "this machine's clock is 2h00m "+side+" the token endpoint's") {
				t.Errorf("status does not say the clock is 2h %s the endpoint's (exit %d):\n%s%s", side, r.code, r.stdout, r.stderr)
			}
			data, _ := os.ReadFile(d.logPath)
			if n := strings.Count(string(data), `"clock_skew"`); n != 1 {
				t.Errorf("the skew was logged %d times, want once", n)
			}
			t.Logf("FIGURE issuer %v off: %d exchanges, %d tokens served and accepted", off, len(at), served)
		})
	}
}

// callAPI calls the fake API's side with tok, as an SDK would, and returns its status and
// answer.
func callAPI(t *testing.T, api *fakeAPI, tok, ws string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, api.Server.URL+"/v0/models", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Blaxel-Authorization", "Bearer "+tok)
	req.Header.Set("X-Blaxel-Workspace", ws)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}
