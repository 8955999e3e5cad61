//go:build sdk

package sdk

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
)

const (
	// tokenTTL is the life of every access token the fake API issues: short, so that two
	// lifetimes pass in 40 s; Blaxel's own are two hours, and the SDK's rule is a fraction (of
	// exp-iat). daemonMinTTL is blauthd's --min-ttl beside them: half the life, as its default
	// 30 s is of a 60 s token, so the daemon refreshes with 80 % of the life left.
	tokenTTL     = e2etest.TokenTTL
	daemonMinTTL = e2etest.MinTTL
	// nodeClientTTL is the token life of TestNodeClient: the Node client library's own suite
	// runs on its defaults (a 30 s min_ttl) and starts daemons of its own with theirs.
	nodeClientTTL = 60 * time.Second
	// sdkCalls one-call SDK processes are spread evenly over two token lifetimes.
	sdkCalls = 30
	// callEvery is the step between their calls.
	callEvery = 2 * tokenTTL / sdkCalls
	// firstCall is when the first call is made, after the first token was issued: call 7 falls
	// 250 ms past half the first token's life, the first moment the TypeScript SDK refreshes on
	// its own (it refreshes when less than 50 % is left). A daemon that has not refreshed by then
	// loses the race in every run, not by chance.
	firstCall = tokenTTL/2 - 7*callEvery + 250*time.Millisecond
	// nodeLead starts each process this long before its call: loading the SDK takes 1-2 s alone, more with a busy CPU.
	nodeLead = 5 * time.Second
)

// The workspaces of the bl config every test writes.
const (
	wsLogin = "acme"    // a bl login session
	wsSA    = "acme-sa" // a service account, under the camelCase key the TS and Python SDKs read
)

// fixture is one test's world: the fake API, a private HOME whose bl config holds a login
// session for acme and a service account for acme-sa, and the SDK script.
type fixture struct {
	ttl     time.Duration // the life of the fake API's tokens
	minTTL  time.Duration // blauthd's --min-ttl
	api     *blaxeltest.Server
	home    *e2etest.Home
	script  string    // e2e/node/list-models.mjs
	issued  time.Time // taken just before the session's access token was issued: its iat is not later
	refresh string    // the session's refresh token as written
	saLine  string    // acme-sa's credentials line, exactly as written
	config  string    // the file as written
}

// newFixture builds the fixture with tokenTTL tokens and a daemon min_ttl of daemonMinTTL.
// access, when not nil, replaces the session's access token in the file (for a token already
// part-way through its life).
func newFixture(t *testing.T, access func(api *blaxeltest.Server, subject string) string) *fixture {
	t.Helper()
	return newFixtureTTL(t, tokenTTL, daemonMinTTL, access)
}

// newFixtureTTL is newFixture with tokens living ttl, beside a daemon whose --min-ttl is minTTL.
func newFixtureTTL(t *testing.T, ttl, minTTL time.Duration, access func(api *blaxeltest.Server, subject string) string) *fixture {
	t.Helper()
	script := filepath.Join(e2etest.NodeDir(t, moduleRoot), "list-models.mjs")
	f := &fixture{ttl: ttl, minTTL: minTTL, api: e2etest.StartAPI(t, ttl), home: e2etest.NewHome(t), script: script}
	e2etest.CheckNothingLeft(t, f.home)

	const subject, deviceCode = "user-acme", "dc-acme-0001"
	f.issued = time.Now()
	tok, refresh := f.api.NewSession(subject, deviceCode)
	f.refresh = refresh
	if access != nil {
		tok = access(f.api, subject)
	}
	f.api.BindSession(subject, wsLogin)
	sa := f.api.AddClient("acme-sa-client", "acme-sa-secret-0001")
	f.api.BindClient("acme-sa-client", wsSA)

	// bl's format (sdk-go's writer) for the login session; the service account as a person adds
	// it by hand for the TypeScript SDK: camelCase key, double-quoted value.
	f.saLine = fmt.Sprintf("    clientCredentials: %q", sa)
	f.config = "context:\n  workspace: " + wsLogin + "\n" +
		"workspaces:\n" +
		"- name: " + wsLogin + "\n" +
		"  credentials:\n" +
		"    access_token: " + tok + "\n" +
		"    refresh_token: " + refresh + "\n" +
		fmt.Sprintf("    expires_in: %d\n", int(ttl.Seconds())) +
		"    device_code: " + deviceCode + "\n" +
		"- name: " + wsSA + "\n" +
		"  credentials:\n" +
		f.saLine + "\n" +
		"tracking: false\n"
	f.home.WriteBLConfig(t, f.config)
	return f
}

// startDaemon runs the real blauthd binary with f's HOME against f's API, with f's --min-ttl.
func (f *fixture) startDaemon(t *testing.T) *e2etest.Daemon {
	return e2etest.StartDaemon(t, e2etest.DaemonOptions{Bin: bins.Blauthd, Home: f.home, APIURL: f.api.Base,
		Args: []string{"--min-ttl", f.minTTL.String()}})
}

// sdkEnv is what a user's shell gives an SDK process besides HOME and PATH.
func (f *fixture) sdkEnv(workspace string) []string {
	return []string{"BL_WORKSPACE=" + workspace, "BL_API_URL=" + f.api.Base}
}

// runOne runs one SDK call now.
func (f *fixture) runOne(t *testing.T, workspace string) e2etest.NodeRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, err := e2etest.RunNode(ctx, e2etest.NodeOptions{Script: f.script, Home: f.home, Env: f.sdkEnv(workspace)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SDK process (BL_WORKSPACE=%s): %s in %s", workspace, strings.TrimSpace(run.Stdout), run.Elapsed.Round(time.Millisecond))
	return run
}

// callSchedule is sdkCalls call times spread evenly over two token lifetimes from f.issued,
// the first at firstCall+shift.
func (f *fixture) callSchedule(shift time.Duration) []time.Time {
	at := make([]time.Time, sdkCalls)
	for k := range at {
		at[k] = f.issued.Add(firstCall + shift + time.Duration(k)*callEvery)
	}
	return at
}

// runSchedule runs one SDK process per call time (BL_WORKSPACE=acme), each started nodeLead
// before its call, and returns the runs in order. It fails the test if a process could not run
// or printed no result; failed calls are results, for the caller to judge.
func (f *fixture) runSchedule(t *testing.T, calls []time.Time) []e2etest.NodeRun {
	t.Helper()
	runs := make([]e2etest.NodeRun, len(calls))
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for k, at := range calls {
		if d := time.Until(at.Add(-nodeLead)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			env := append(f.sdkEnv(wsLogin), e2etest.CallAtEnv(at))
			runs[k], errs[k] = e2etest.RunNode(ctx, e2etest.NodeOptions{Script: f.script, Home: f.home, Env: env})
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			t.Errorf("SDK process %d: %v", k, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for k, r := range runs {
		res := r.Result
		outcome := "ok"
		if !res.OK {
			outcome = "FAILED: " + res.Error
		}
		t.Logf("SDK call %2d at %6.2fs of the first token's life (planned %6.2fs): %s",
			k, res.CallTime().Sub(f.issued).Seconds(), calls[k].Sub(f.issued).Seconds(), outcome)
	}
	return runs
}

func failedCalls(runs []e2etest.NodeRun) int {
	n := 0
	for _, r := range runs {
		if !r.Result.OK {
			n++
		}
	}
	return n
}

// figures logs the suite's measurements in one greppable line.
func (f *fixture) figures(t *testing.T, label string, runs []e2etest.NodeRun) {
	t.Helper()
	api := f.api.APICalls()
	t.Logf("FIGURES %s: SDK token requests %d (%d refused), blauthd token requests %d (%d refused), SDK calls failed %d/%d, API calls ok %d rejected %d %v, token callers %q",
		label, f.api.TokenRequestsBy(blaxeltest.NotDaemon), f.api.TokenFailuresBy(blaxeltest.NotDaemon),
		f.api.TokenRequestsBy(blaxeltest.IsDaemon), f.api.TokenFailuresBy(blaxeltest.IsDaemon),
		failedCalls(runs), len(runs), api.OK, api.Rejected, api.Reasons, f.api.TokenCallers())
}

// TestSDKBesideDaemonNeverRefreshes: with blauthd keeping the bl login session fresh, short-lived
// TypeScript SDK processes reading the same config never find a token they would refresh, so
// they never spend the rotating refresh token, and every call succeeds.
func TestSDKBesideDaemonNeverRefreshes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	d := f.startDaemon(t)
	runs := f.runSchedule(t, f.callSchedule(0))
	f.figures(t, "with blauthd", runs)

	if n := failedCalls(runs); n != 0 {
		t.Errorf("%d of %d SDK calls failed beside blauthd; every call must succeed", n, len(runs))
	}
	if n := f.api.TokenRequestsBy(blaxeltest.NotDaemon); n != 0 {
		t.Errorf("SDK processes made %d token requests of their own beside blauthd, want 0: blauthd must refresh "+
			"the session while the SDK still finds it fresh (more than half its life left)", n)
	}
	if strings.Contains(d.Log(), "invalid_grant") {
		t.Errorf("blauthd's refresh was refused (invalid_grant): something else spent the refresh token first")
	}
}

// TestSDKWithoutDaemon is the reference for TestSDKBesideDaemonNeverRefreshes: the same SDK
// processes on the same schedule, with no daemon. Its figures are the "without blauthd" ones.
// The two run in parallel; this one's calls come half a step later (call 7 still past half the
// first token's life), so that the two suites' SDK processes do not load at once.
func TestSDKWithoutDaemon(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	runs := f.runSchedule(t, f.callSchedule(callEvery/2))
	f.figures(t, "without blauthd", runs)

	if n := f.api.TokenRequestsBy(blaxeltest.NotDaemon); n < 1 {
		t.Errorf("SDK processes made no token request over two token lifetimes, want at least one: "+
			"the TypeScript SDK refreshes a session with less than half its life left (%d calls failed)", failedCalls(runs))
	}
	if n := f.api.TokenRequestsBy(blaxeltest.IsDaemon); n != 0 {
		t.Errorf("%d token requests named blauthd with no daemon running", n)
	}
}

// TestSDKNeighbourWorkspaceSurvivesWriteBack: when blauthd writes a refreshed acme session back
// to the bl config, the neighbouring workspace's service account stays as the user wrote it
// (camelCase clientCredentials, the only key the TypeScript SDK reads), and the SDK still
// authenticates that workspace.
func TestSDKNeighbourWorkspaceSurvivesWriteBack(t *testing.T) {
	// The session's access token in the file is past blauthd's refresh point (a third of its
	// life left; the daemon refreshes with 80 %): the daemon refreshes and writes back at once.
	f := newFixture(t, func(api *blaxeltest.Server, subject string) string {
		return api.TokenExpiring(subject, time.Now().Add(tokenTTL/3), tokenTTL)
	})
	f.startDaemon(t)

	deadline := time.Now().Add(30 * time.Second)
	var now string
	for {
		now = f.home.ReadBLConfig(t)
		if now != f.config && !strings.Contains(now, f.refresh) && strings.Contains(now, "refresh_token: ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("blauthd did not write a refreshed acme session back within 30s; the file is now:\n%s", redact(now))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the bl config after blauthd's write-back:\n%s", redact(now))

	if !hasLine(now, f.saLine) {
		t.Errorf("after the write-back, acme-sa's line %q is gone from the bl config (see the file above): "+
			"a write-back must leave what it did not refresh as it was", redact(f.saLine))
	}

	before := f.api.TokenRequestsBy(blaxeltest.NotDaemon)
	if r := f.runOne(t, wsLogin); !r.Result.OK {
		t.Errorf("SDK call for %s after the write-back failed: %s", wsLogin, r.Result.Error)
	}
	if n := f.api.TokenRequestsBy(blaxeltest.NotDaemon) - before; n != 0 {
		t.Errorf("the SDK made %d token requests for %s right after blauthd wrote a fresh session back, want 0", n, wsLogin)
	}
	if r := f.runOne(t, wsSA); !r.Result.OK {
		t.Errorf("SDK call for the neighbouring workspace %s after the write-back failed: %s "+
			"(the TypeScript SDK reads service accounts only under clientCredentials)", wsSA, r.Result.Error)
	}
	f.figures(t, "neighbour after write-back", nil)
}

func hasLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// redact hides the values of a bl config's secret fields, keeping their keys and quoting.
func redact(text string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		key, val, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "access_token", "refresh_token", "device_code", "apiKey", "client_credentials", "clientCredentials":
			q := ""
			if strings.HasPrefix(val, `"`) {
				q = `"`
			}
			lines[i] = fmt.Sprintf("%s: %s<%d chars>%s", key, q, len(strings.Trim(val, `"`)), q)
		}
	}
	return strings.Join(lines, "\n")
}
