//go:build reliability

package reliability

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// TestReliabilityMinTTLNearTheLifetime runs a real daemon holding a service account whose
// tokens live 30 s (--min-ttl 10s: a token is refreshed 7-8 s after it is received, with 22 s
// of it left at the latest). A caller asks over and over for min_ttl=29 (the life less 1 s) and
// min_ttl=27 (the life less 10 %), which only a token younger than its refresh period has, and
// for min_ttl=22, the limit. Before, every request for 29 made an exchange (a refresh-token
// rotation and a bl config rewrite for a login session), and 27 one every 3 s.
//
// What a user checks: 29 and 27 are refused at once with code=unavailable, naming the 22 s
// limit in the message and the hint; 22 is served every time with that much left, a token the
// API accepts; the endpoint sees the daemon's exchanges at least a refresh period apart.
func TestReliabilityMinTTLNearTheLifetime(t *testing.T) {
	const (
		ttl      = 30 * time.Second
		period   = 7 * time.Second // the shortest refresh period of a 30 s token under --min-ttl 10s
		limit    = "22s"
		limitTTL = 22 * time.Second
		rounds   = 4 // exchanges to see in all: three periods
	)
	ws := "minttl-" + randHex(4)
	api := newFakeAPI(t, ttl)
	var mu sync.Mutex
	var at []time.Time // when each token request reached the endpoint
	arrived := make(chan struct{}, 1)
	api.setHooks(func(exchange) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default: // a wake-up is pending already
		}
	}, nil, nil)
	exchanges := func() int { mu.Lock(); defer mu.Unlock(); return len(at) }
	cc := api.addClient("sa-"+ws, "secret-"+randHex(12))
	d := startDaemon(t, daemonOpts{api: api, args: []string{"--min-ttl", "10s"},
		env: []string{"BL_WORKSPACE=" + ws, "BL_CLIENT_CREDENTIALS=" + cc}})
	d.mustServe(t, api, ws, 10*time.Second, "") // the daemon has seen the tokens' lifetime

	refused, served := 0, 0
	deadline := time.After(time.Duration(rounds+2) * 3 * period)
	for exchanges() < rounds {
		for _, asked := range []string{"29", "27"} {
			_, err := d.get(ipc.KeyWorkspace, ws, ipc.KeyMinTTL, asked)
			var e *ipc.Error
			if !asIPCError(err, &e) || e.Code != ipc.CodeUnavailable || !strings.Contains(e.Message, "at most "+limit) || !strings.Contains(e.Hint, "at most "+limit) {
				t.Fatalf("min_ttl=%s with %v tokens (after %d exchanges): %v, want code=unavailable naming the %s limit", asked, ttl, exchanges(), err, limit)
			}
			refused++
		}
		before := time.Now()
		tok, err := d.get(ipc.KeyWorkspace, ws, ipc.KeyMinTTL, "22")
		if err != nil {
			t.Fatalf("min_ttl=22, the limit: %v", err)
		}
		if left := tok.Expiry.Sub(before); left < limitTTL {
			t.Fatalf("min_ttl=22 served a token with %v left", left)
		}
		if code, body := callAPI(t, api, tok.Token, ws); code != http.StatusOK {
			t.Fatalf("the API refused a token served for min_ttl=22: %d %v", code, body)
		}
		served++
		select {
		case <-arrived: // a refresh: ask again at once
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("the daemon made %d exchanges, not %d: it does not refresh on schedule", exchanges(), rounds)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < period-50*time.Millisecond {
			t.Fatalf("exchange %d came %v after the one before, less than the %v period (%d exchanges, %d requests refused)", i+1, gap.Round(time.Millisecond), period, len(at), refused)
		}
	}
	t.Logf("FIGURE min_ttl near the lifetime: %d exchanges, %d requests for 29 s and 27 s refused, %d for 22 s served", len(at), refused, served)
}
