//go:build sdk

package sdk

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
)

const (
	// longRunProcs long-running SDK processes share one daemon.
	longRunProcs = 10
	// longRunFor is how long each calls the API: three token lifetimes.
	longRunFor = 3 * tokenTTL
	// contrastFor is how long each process of the contrast calls: past the one token it is given
	// (at most tokenTTL) by half a lifetime.
	contrastFor = tokenTTL + tokenTTL/2
)

// The daemon never serves a token with less than daemonMinTTL left, and useBlauth's
// authenticate() never lets a request go with less: long-running.mjs passes it as minTTL
// (E2E_MIN_TTL), for the library's default (30 s) is more than tokenTTL tokens ever have.

// longRun is the JSON line e2e/node/long-running.mjs prints.
type longRun struct {
	Mode         string                   `json:"mode"`
	Workspace    string                   `json:"workspace"`
	Calls        int                      `json:"calls"`
	OK           int                      `json:"ok"`
	Failed       int                      `json:"failed"`
	Reasons      map[string]int           `json:"reasons"`
	Expiries     []int64                  `json:"expiries"`
	MinLeftMs    *int64                   `json:"minLeftMs"`
	BeforeExpiry struct{ OK, Failed int } `json:"beforeExpiry"`
	AfterExpiry  struct{ OK, Failed int } `json:"afterExpiry"`
	LoadMs       int64                    `json:"loadMs"`
	ReadyMs      int64                    `json:"readyMs"`
	EndMs        int64                    `json:"endMs"`
	Fatal        string                   `json:"fatal"`
}

// runLongProcs runs n long-running SDK processes at once, each in an empty HOME of its own
// (sdkHome: no bl config) with env, and returns their results in order. It fails the test when a
// process could not run or printed no result.
func runLongProcs(t *testing.T, sdkHome *e2etest.Home, o e2etest.NodeOptions, n int, limit time.Duration) ([]longRun, []e2etest.NodeRun) {
	t.Helper()
	results := make([]longRun, n)
	runs := make([]e2etest.NodeRun, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			defer cancel()
			o := o
			o.Home = sdkHome
			runs[k], errs[k] = e2etest.RunNodeJSON(ctx, o, &results[k])
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			t.Errorf("SDK process %d: %v", k, err)
		} else if results[k].Fatal != "" {
			t.Errorf("SDK process %d could not run: %s\nstderr: %s", k, results[k].Fatal, runs[k].Stderr)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for k, r := range results {
		minLeft := "n/a"
		if r.MinLeftMs != nil {
			minLeft = fmt.Sprintf("%.1fs", float64(*r.MinLeftMs)/1000)
		}
		exitMs := runs[k].Elapsed.Milliseconds() - r.EndMs
		t.Logf("SDK process %d (%s, exit %d, %s: loading %.1fs, first token %.1fs, exit %.1fs after its last line): %d calls, %d ok, %d failed %v; %d tokens sent; least life left on one sent %s",
			k, r.Mode, runs[k].ExitCode, runs[k].Elapsed.Round(100*time.Millisecond), float64(r.LoadMs)/1000, float64(r.ReadyMs)/1000, float64(exitMs)/1000,
			r.Calls, r.OK, r.Failed, r.Reasons, len(r.Expiries), minLeft)
	}
	return results, runs
}

// TestLongRunningSDK: ten long-running processes of the real TypeScript SDK share one daemon
// token through useBlauth() for three token lifetimes, and the same ten started today's way
// (blauth-helper exec, the token in BL_API_KEY) for contrast. The two run side by side.
func TestLongRunningSDK(t *testing.T) {
	t.Parallel()
	script := filepath.Join(e2etest.NodeDir(t, moduleRoot), "long-running.mjs")
	t.Run("useBlauth", func(t *testing.T) {
		t.Parallel()
		testLongRunningUseBlauth(t, script)
	})
	t.Run("exec", func(t *testing.T) {
		t.Parallel()
		testLongRunningExec(t, script)
	})
}

// testLongRunningUseBlauth: the daemon holds a bl login session (in its own HOME); the SDK
// processes hold nothing (an empty HOME, no BL_API_KEY, no BL_CLIENT_CREDENTIALS, not even
// BL_WORKSPACE) and call useBlauth() first. Every API call must succeed with a token the fake API
// checked (signature, expiry, workspace), no SDK process may ask the token endpoint for anything,
// and the daemon must refresh about once per refresh period for all of them together.
func testLongRunningUseBlauth(t *testing.T, script string) {
	f := newFixture(t, nil)
	f.onlyLoginSession(t)
	d := f.startDaemon(t)
	sdkHome := e2etest.NewHome(t)
	e2etest.CheckNothingLeft(t, sdkHome)

	o := e2etest.NodeOptions{Script: script, Env: []string{
		"BLAUTH_SOCKET=" + d.Socket,
		"BL_API_URL=" + f.api.Base,
		"E2E_AUTH=blauth",
		"E2E_MIN_TTL=" + strconv.Itoa(int(daemonMinTTL.Seconds())),
		"E2E_DURATION_MS=" + strconv.FormatInt(longRunFor.Milliseconds(), 10),
	}}
	start := time.Now()
	results, runs := runLongProcs(t, sdkHome, o, longRunProcs, longRunFor+2*time.Minute)
	elapsed := time.Since(start)
	// The window in which the daemon had to keep the session fresh: from the first token's
	// issue to now. The daemon goes on refreshing the session it holds after the processes end,
	// so the count is taken now, with the window.
	daemonReqs := f.api.TokenRequestsBy(blaxeltest.IsDaemon)
	window := time.Since(f.issued)
	sdkReqs := f.api.TokenRequestsBy(blaxeltest.NotDaemon)
	api := f.api.APICalls()

	// The daemon refreshes a token when 60-65 % of its servable life (its life less the
	// min_ttl) is left: RefreshPeriod after its iat (3.5-4 s for 20 s tokens and a 10 s
	// min_ttl). iat and exp are whole seconds (a refresh may come up to 1 s early), the daemon
	// looks once a second (up to 1 s late), and the exchange and the write-back to the bl config
	// take their time on a loaded machine: one refresh every period less 1 s to period plus 2 s
	// at the extremes.
	shortest, longest := e2etest.RefreshPeriod(tokenTTL, daemonMinTTL)
	nominalMin, nominalMax := shortest.Seconds(), longest.Seconds()
	lo := int(math.Floor(window.Seconds() / (nominalMax + 2)))
	hi := int(math.Floor(window.Seconds() / (nominalMin - 1)))
	sessionRefreshes := f.api.Count("refresh_token")

	calls, ok, failed := 0, 0, 0
	reasons := map[string]int{}
	tokens := map[int64]bool{}
	minLeft := int64(math.MaxInt64)
	for k, r := range results {
		calls += r.Calls
		ok += r.OK
		failed += r.Failed
		for why, n := range r.Reasons {
			reasons[why] += n
		}
		for _, e := range r.Expiries {
			tokens[e] = true
		}
		if r.MinLeftMs != nil {
			minLeft = min(minLeft, *r.MinLeftMs)
		}
		if runs[k].ExitCode != 0 {
			t.Errorf("SDK process %d exited with %d after handle.close(), want 0 (ending by itself)\nstderr: %s", k, runs[k].ExitCode, runs[k].Stderr)
		}
		if r.Workspace != wsLogin {
			t.Errorf("SDK process %d used workspace %q, want %q (the daemon's default)", k, r.Workspace, wsLogin)
		}
	}
	periods := refreshPeriods(tokens)

	t.Logf("FIGURES useBlauth: %d SDK processes for %s each (%s in all): API calls %d, ok %d, failed %d %v; fake API ok %d rejected %d %v; "+
		"token requests: SDK processes %d, blauthd %d in %.0fs (expected %d-%d at one per %.1f-%.0fs nominal, allowed %d-%d); "+
		"distinct tokens sent %d, refresh periods seen %s; least life left on a token sent %.1fs",
		longRunProcs, longRunFor, elapsed.Round(time.Second), calls, ok, failed, reasons, api.OK, api.Rejected, api.Reasons,
		sdkReqs, daemonReqs, window.Seconds(),
		int(window.Seconds()/nominalMax), int(window.Seconds()/nominalMin), nominalMin, nominalMax, lo, hi,
		len(tokens), periods, float64(minLeft)/1000)

	if failed != 0 || api.Rejected != 0 {
		t.Errorf("%d of %d SDK calls failed and the API rejected %d %v; every call must succeed", failed, calls, api.Rejected, api.Reasons)
	}
	if api.OK != calls {
		t.Errorf("the fake API saw %d good calls, the processes counted %d", api.OK, calls)
	}
	if sdkReqs != 0 {
		t.Errorf("SDK processes made %d token requests (callers %q), want 0: every token must come from blauthd", sdkReqs, f.api.TokenCallers())
	}
	if sessionRefreshes != daemonReqs {
		t.Errorf("blauthd made %d token requests, %d of them refreshes of the session: it holds nothing else", daemonReqs, sessionRefreshes)
	}
	if daemonReqs < lo || daemonReqs > hi {
		t.Errorf("blauthd made %d token requests in %.0fs, want %d-%d: one per refresh period for all processes together",
			daemonReqs, window.Seconds(), lo, hi)
	}
	if minLeft <= daemonMinTTL.Milliseconds() {
		t.Errorf("a call began with a token %.1fs from expiry, want more than the %s min_ttl", float64(minLeft)/1000, daemonMinTTL)
	}
	if len(tokens) < 2 {
		t.Errorf("the processes sent %d distinct tokens over %s; the daemon's refreshes did not reach them", len(tokens), longRunFor)
	}
	if log := d.Log(); strings.Contains(log, "eyJ") {
		t.Errorf("blauthd's log holds a JWT")
	}
}

// testLongRunningExec is the contrast: the same processes started with `blauth-helper exec`,
// which hands each the daemon's token in BL_API_KEY. The SDK takes it for an API key and never
// renews it: once it expires every call fails with 401. Asserted only as far as that is true.
func testLongRunningExec(t *testing.T, script string) {
	f := newFixture(t, nil)
	f.onlyLoginSession(t)
	d := f.startDaemon(t)
	sdkHome := e2etest.NewHome(t)
	e2etest.CheckNothingLeft(t, sdkHome)

	o := e2etest.NodeOptions{
		Script: script,
		Via:    []string{bins.Helper, "exec", "--"},
		Env: []string{
			"BLAUTH_SOCKET=" + d.Socket,
			"BLAUTH_NO_SPAWN=1",
			"BL_API_URL=" + f.api.Base,
			"E2E_AUTH=env",
			"E2E_DURATION_MS=" + strconv.FormatInt(contrastFor.Milliseconds(), 10),
		},
	}
	start := time.Now()
	results, runs := runLongProcs(t, sdkHome, o, longRunProcs, contrastFor+2*time.Minute)
	elapsed := time.Since(start)

	calls, failed, beforeOK, beforeFailed, afterOK, afterFailed := 0, 0, 0, 0, 0, 0
	reasons := map[string]int{}
	for k, r := range results {
		calls += r.Calls
		failed += r.Failed
		beforeOK += r.BeforeExpiry.OK
		beforeFailed += r.BeforeExpiry.Failed
		afterOK += r.AfterExpiry.OK
		afterFailed += r.AfterExpiry.Failed
		for why, n := range r.Reasons {
			reasons[why] += n
		}
		if runs[k].ExitCode != 0 {
			t.Errorf("contrast process %d exited with %d\nstderr: %s", k, runs[k].ExitCode, runs[k].Stderr)
		}
		if len(r.Expiries) != 1 {
			t.Errorf("contrast process %d sent %d distinct tokens, want the one exec gave it", k, len(r.Expiries))
		}
		if r.AfterExpiry.Failed == 0 {
			t.Errorf("contrast process %d made no call after its token expired (%d calls in %s)", k, r.Calls, contrastFor)
		}
	}
	api := f.api.APICalls()
	t.Logf("FIGURES exec contrast: %d SDK processes under blauth-helper exec for %s each (%s in all): API calls %d, failed %d %v; "+
		"before the token expired %d ok %d failed, after it %d ok %d failed; fake API ok %d rejected %d %v; token requests: SDK processes %d, blauthd %d",
		longRunProcs, contrastFor, elapsed.Round(time.Second), calls, failed, reasons, beforeOK, beforeFailed, afterOK, afterFailed,
		api.OK, api.Rejected, api.Reasons, f.api.TokenRequestsBy(blaxeltest.NotDaemon), f.api.TokenRequestsBy(blaxeltest.IsDaemon))

	if beforeFailed != 0 {
		t.Errorf("%d calls failed before their token expired; the contrast is about expiry alone", beforeFailed)
	}
	if afterOK != 0 {
		t.Errorf("%d calls with an expired token succeeded: the fake API must refuse them", afterOK)
	}
	if n := api.Reasons[blaxeltest.RejectExpired]; n != api.Rejected || failed != api.Rejected {
		t.Errorf("the fake API rejected %d calls (%d as %s) and the processes counted %d failures; every failure must be an expired token",
			api.Rejected, n, blaxeltest.RejectExpired, failed)
	}
}

// onlyLoginSession rewrites f's bl config with the acme login session alone: without acme-sa's
// service account, which the daemon would keep fresh too, every token request it makes is one
// of the session's refreshes.
func (f *fixture) onlyLoginSession(t *testing.T) {
	t.Helper()
	i := strings.Index(f.config, "- name: "+wsSA+"\n")
	j := strings.Index(f.config, "tracking: false\n")
	if i < 0 || j < i {
		t.Fatalf("the fixture's bl config has no %s entry to drop:\n%s", wsSA, redact(f.config))
	}
	f.config = f.config[:i] + f.config[j:]
	f.home.WriteBLConfig(t, f.config)
}

// refreshPeriods describes the gaps between the issue times of consecutive tokens (their
// expiries less the token life), in whole seconds: min, mean and max.
func refreshPeriods(expiries map[int64]bool) string {
	es := make([]int64, 0, len(expiries))
	for e := range expiries {
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool { return es[i] < es[j] })
	if len(es) < 2 {
		return "none"
	}
	var gaps []int64
	for i := 1; i < len(es); i++ {
		gaps = append(gaps, es[i]-es[i-1])
	}
	sum := int64(0)
	for _, g := range gaps {
		sum += g
	}
	return fmt.Sprintf("%d gaps, min %ds mean %.1fs max %ds", len(gaps), slices.Min(gaps), float64(sum)/float64(len(gaps)), slices.Max(gaps))
}
