//go:build sdk

package clients

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
)

const (
	// fleetTTL is the life of every token the fake API issues, and fleetMinTTL the daemon's
	// --min-ttl and the min_ttl the clients ask for (E2E_MIN_TTL; their libraries' default,
	// 30 s, is more than such tokens have). The daemon refreshes a token when 60–65 % of its
	// life is left and no later than when 60 % of its servable life (life less the min_ttl) is
	// left: e2etest.RefreshPeriod after it is issued, 3.5–4 s.
	fleetTTL    = e2etest.TokenTTL
	fleetMinTTL = e2etest.MinTTL
	// fleetLife is how long each client process runs: three token lifetimes.
	fleetLife = 3 * fleetTTL
	// fleetSize client processes per language.
	fleetSize = 10
)

// fleetPeriods are the refresh periods the daemon may show: with the JWT's whole-second iat
// and the daemon's 1 s tick, a second either side of the nominal ones.
func fleetPeriods() (periodMin, periodMax float64) {
	shortest, longest := e2etest.RefreshPeriod(fleetTTL, fleetMinTTL)
	return shortest.Seconds() - 1, longest.Seconds() + 1
}

// callerResult is the JSON line a caller (gocaller, pycaller.py) prints.
type callerResult struct {
	Calls  int      `json:"calls"`
	OK     int      `json:"ok"`
	Failed int      `json:"failed"`
	Tokens int      `json:"tokens"`
	Errors []string `json:"errors"`
}

func TestGoFleet(t *testing.T) {
	t.Parallel()
	runFleet(t, "go", func(ctx context.Context) *exec.Cmd {
		return exec.CommandContext(ctx, goCaller)
	}, fmt.Sprintf("E2E_DURATION=%s", fleetLife), fmt.Sprintf("E2E_MIN_TTL=%s", fleetMinTTL))
}

func TestPythonFleet(t *testing.T) {
	t.Parallel()
	py := python3(t)
	script := filepath.Join(moduleRoot, "e2e", "clients", "pycaller.py")
	runFleet(t, "python", func(ctx context.Context) *exec.Cmd {
		return exec.CommandContext(ctx, py, script)
	}, fmt.Sprintf("E2E_DURATION=%g", fleetLife.Seconds()), fmt.Sprintf("E2E_MIN_TTL=%g", fleetMinTTL.Seconds()))
}

// runFleet runs fleetSize long-running client processes for fleetLife beside one
// socket-activated daemon, stops the daemon halfway (socket activation starts another at the
// clients' reconnection), and checks what a user would: every API call succeeded, the clients
// made no token request, and the daemon about one per refresh period.
func runFleet(t *testing.T, lang string, command func(context.Context) *exec.Cmd, env ...string) {
	w := newWorld(t, fleetTTL, fleetMinTTL)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), fleetLife+2*time.Minute)
	defer cancel()

	results := make([]run, fleetSize)
	walls := make([]time.Duration, fleetSize) // each process's wall time
	var wg sync.WaitGroup
	for i := range results {
		cmd := command(ctx)
		cmd.Env = w.clientEnv(env...)
		cmd.Dir = w.home.Work
		cmd.WaitDelay = 5 * time.Second
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		began := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s client %d: %v", lang, i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cmd.Wait()
			walls[i] = time.Since(began)
			results[i] = run{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String(), err: err}
		}()
	}

	// Halfway, the daemon stops (an upgrade, blauth-helper stop): the clients keep their tokens,
	// reconnect, and their reconnection starts a new daemon.
	select {
	case <-time.After(fleetLife / 2):
	case <-ctx.Done():
	}
	stopped := w.d.StopDaemon(t)
	t.Logf("%s fleet: stopped blauthd %d at %.1fs", lang, stopped, time.Since(start).Seconds())
	wg.Wait()
	elapsed := time.Since(start)

	var calls, ok, failed, minTokens, maxTokens int
	minTokens = math.MaxInt
	for i, r := range results {
		w.checkSecrets(t, fmt.Sprintf("%s client %d's output", lang, i), r.stdout+r.stderr)
		var res callerResult
		if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &res); err != nil {
			t.Errorf("%s client %d printed no result (exit %d, %v): stdout %q stderr %q", lang, i, r.code, r.err, r.stdout, r.stderr)
			continue
		}
		if r.code != 0 || res.Failed != 0 {
			t.Errorf("%s client %d: exit %d, %d of %d calls failed: %q; stderr %q", lang, i, r.code, res.Failed, res.Calls, res.Errors, r.stderr)
		}
		calls, ok, failed = calls+res.Calls, ok+res.OK, failed+res.Failed
		minTokens, maxTokens = min(minTokens, res.Tokens), max(maxTokens, res.Tokens)
	}
	api := w.api.APICalls()
	clientTokenRequests := w.api.TokenRequestsBy(blaxeltest.NotDaemon)
	daemonTokenRequests := w.api.TokenRequestsBy(blaxeltest.IsDaemon)
	daemons := len(w.d.Pids())
	w.checkSecrets(t, "blauthd's log", w.d.Log())

	// Each daemon exchanged once when it started, then once per refresh period: every exchange
	// opens a period. A daemon stopped mid-period leaves one short period.
	refreshes := daemonTokenRequests - daemons
	period := elapsed.Seconds() / float64(max(daemonTokenRequests, 1))
	periodMin, periodMax := fleetPeriods()
	lo := int(elapsed.Seconds() / periodMax)
	hi := int(math.Ceil(elapsed.Seconds()/periodMin)) + daemons
	slices.Sort(walls)
	t.Logf("FIGURES %s fleet: %d processes for %s (%d daemons, one restart): API calls %d ok %d failed %d, fake API ok %d rejected %d %v; "+
		"token requests from clients %d, from blauthd %d (%d starts + %d refreshes: one per %.1fs; expected %d–%d); distinct tokens per process %d–%d; "+
		"process wall time %s–%s; ran %s",
		lang, fleetSize, fleetLife, daemons, calls, ok, failed, api.OK, api.Rejected, api.Reasons,
		clientTokenRequests, daemonTokenRequests, daemons, refreshes, period, lo, hi, minTokens, maxTokens,
		walls[0].Round(100*time.Millisecond), walls[len(walls)-1].Round(100*time.Millisecond), elapsed.Round(time.Second))

	if calls < fleetSize*int(fleetLife/(2*time.Second)) {
		t.Errorf("%d calls in all, want at least %d (one every 2 s per process)", calls, fleetSize*int(fleetLife/(2*time.Second)))
	}
	if failed != 0 || api.Rejected != 0 || api.OK != calls {
		t.Errorf("%d of %d calls failed and the API rejected %d (%v), accepted %d; every call must succeed", failed, calls, api.Rejected, api.Reasons, api.OK)
	}
	if clientTokenRequests != 0 {
		t.Errorf("the client processes made %d token requests (callers %q), want 0: they hold no secret and take the daemon's token", clientTokenRequests, w.api.TokenCallers())
	}
	if daemons != 2 {
		t.Errorf("%d daemons were started, want 2: one at the first connection, one after the stop", daemons)
	}
	if daemonTokenRequests < lo || daemonTokenRequests > hi {
		t.Errorf("blauthd made %d token requests in %s, want %d–%d: about one per refresh period (%.1f–%.1f s), whatever the number of clients",
			daemonTokenRequests, elapsed.Round(time.Second), lo, hi, periodMin+1, periodMax-1)
	}
	// A client sees every token the daemon holds while it runs: one per period, less those it
	// missed around the daemon's restart.
	if want := int(fleetLife.Seconds() / (periodMax + 2)); minTokens < want {
		t.Errorf("a client carried only %d distinct tokens in %s, fewer than %d; it must take every refresh (about %d)",
			minTokens, fleetLife, want, int(fleetLife.Seconds()/(periodMax-1)))
	}
}
