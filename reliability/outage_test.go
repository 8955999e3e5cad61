//go:build reliability

package reliability

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/ipc"
)

// outageFaults is the order in which the token endpoint fails: each exchange the daemon tries
// during the outage meets the next one. The hang outlasts the daemon's exchange timeout (20s).
var outageFaults = []struct {
	f    blaxeltest.Fault
	name string
}{
	{blaxeltest.Fault503, "503"},
	{blaxeltest.Fault500, "500"},
	{blaxeltest.Fault429, "429 Retry-After 2"},
	{blaxeltest.FaultHTML, "502 HTML"},
	{blaxeltest.FaultGarbage, "200 garbage"},
	{blaxeltest.FaultReset, "connection reset"},
	{blaxeltest.FaultHang, "hang"},
}

// TestReliabilityTokenEndpointOutage: the token endpoint fails in every way for longer than the
// token's remaining life. Callers polling every 100ms get the cached token while it is good, then
// code=unavailable, never an expired token; service resumes when the endpoint is back.
func TestReliabilityTokenEndpointOutage(t *testing.T) {
	const (
		ws      = "outage-ws"
		ttl     = 20 * time.Second
		minTTL  = 2 * time.Second
		pollers = 4
		// resumeBound is how soon after the endpoint is back a token must be served again.
		resumeBound = 30 * time.Second
	)
	api, d := serviceAccountDaemon(t, ws, ttl, "--min-ttl", minTTL.String())
	api.SetRetryAfter(2)
	api.SetHang(time.Minute)
	first := d.mustServe(t, api, ws, ttl-2*time.Second, "")
	exp0 := first.Expiry
	outageEnd := exp0.Add(10 * time.Second)

	// The outage starts now and lasts until 10s after the token expired: every exchange meets
	// the next fault of the cycle.
	var mu sync.Mutex
	var faultsSeen []string
	outage := true
	api.setHooks(func(exchange) {
		mu.Lock()
		defer mu.Unlock()
		if !outage {
			api.SetFault(blaxeltest.FaultNone, 0)
			return
		}
		f := outageFaults[len(faultsSeen)%len(outageFaults)]
		faultsSeen = append(faultsSeen, f.name)
		api.SetFault(f.f, -1)
	}, nil, nil)
	t.Cleanup(func() { api.setHooks(nil, nil, nil); api.SetFault(blaxeltest.FaultNone, 0) })

	type obs struct {
		at   time.Time
		ok   bool
		left time.Duration // life left in a served token
		code string
	}
	var (
		omu      sync.Mutex
		observed []obs
		errs     []string
	)
	note := func(o obs, bad string) {
		omu.Lock()
		defer omu.Unlock()
		observed = append(observed, o)
		if bad != "" && len(errs) < 20 {
			errs = append(errs, o.at.Format("15:04:05.000")+" "+bad)
		}
	}
	stop := make(chan struct{})
	resumed := make(chan time.Time, pollers)
	var wg sync.WaitGroup
	var endpointBack time.Time
	var backMu sync.Mutex
	for p := 0; p < pollers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				tok, err := d.get(ipc.KeyWorkspace, ws)
				now := time.Now()
				if err != nil {
					code := ipc.ErrorCode(err)
					var e *ipc.Error
					bad := ""
					switch {
					case code == "":
						bad = "transport error: " + err.Error()
					case code != ipc.CodeUnavailable:
						bad = fmt.Sprintf("code=%s (want %s): %v", code, ipc.CodeUnavailable, err)
					case asIPCError(err, &e) && (e.Message == "" || e.Hint == ""):
						bad = "an unavailable answer without a message or a hint"
					}
					note(obs{at: now, code: code}, bad)
					continue
				}
				bad := ""
				if cerr := api.checkToken(tok.Token, tok.Expiry, now, minTTL-time.Second); cerr != nil {
					bad = cerr.Error()
				}
				note(obs{at: now, ok: true, left: tok.Expiry.Sub(now)}, bad)
				backMu.Lock()
				back := endpointBack
				backMu.Unlock()
				if !back.IsZero() && now.After(back) && tok.Token != first.Token {
					select {
					case resumed <- now:
					default:
					}
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	time.Sleep(time.Until(outageEnd))
	mu.Lock()
	outage = false
	api.SetFault(blaxeltest.FaultNone, 0)
	mu.Unlock()
	back := time.Now()
	backMu.Lock()
	endpointBack = back
	backMu.Unlock()
	t.Logf("FIGURE outage: token expired at %s; endpoint failing from the start until %s (%s past expiry); faults met in order: %v",
		exp0.Format("15:04:05"), back.Format("15:04:05"), back.Sub(exp0).Round(time.Second), faultsSeen)

	var resumedAt time.Time
	select {
	case resumedAt = <-resumed:
	case <-time.After(resumeBound + 75*time.Second): // past the bound: only to measure
	}
	omu.Lock()
	var served, unavailable, servedAfterRefreshDue, unavailableAfterExpiry int
	minLeft := time.Hour
	refreshDue := exp0.Add(-time.Duration(float64(ttl) * 0.45))
	for _, o := range observed {
		if o.ok {
			served++
			if o.left < minLeft {
				minLeft = o.left
			}
			if o.at.After(refreshDue) && o.at.Before(exp0) {
				servedAfterRefreshDue++
			}
		} else if o.code == ipc.CodeUnavailable {
			unavailable++
			if o.at.After(exp0.Add(-minTTL)) {
				unavailableAfterExpiry++
			}
		}
	}
	bad := append([]string(nil), errs...)
	omu.Unlock()
	t.Logf("FIGURE outage: %d gets answered with a token (least life left %s), %d with code=unavailable (%d of them after the token's end)",
		served, minLeft.Round(time.Millisecond), unavailable, unavailableAfterExpiry)
	for _, b := range bad {
		t.Errorf("bad answer: %s", b)
	}
	if len(faultsSeen) < len(outageFaults) {
		t.Errorf("the daemon met only %d faults (%v); the cycle has %d", len(faultsSeen), faultsSeen, len(outageFaults))
	}
	if servedAfterRefreshDue == 0 {
		t.Errorf("the cached token was not served while the refresh was failing")
	}
	if unavailableAfterExpiry == 0 {
		t.Errorf("no caller saw code=unavailable after the token's end")
	}
	if resumedAt.IsZero() {
		t.Fatalf("service did not resume within %s of the endpoint's return", resumeBound+75*time.Second)
	}
	took := resumedAt.Sub(back)
	t.Logf("FIGURE outage: service resumed %s after the endpoint came back", took.Round(100*time.Millisecond))
	if took > resumeBound {
		t.Errorf("service resumed %s after the endpoint came back; want within %s (see docs/RELIABILITY.md: backoff after the token is lost)", took.Round(time.Second), resumeBound)
	}
	d.mustServe(t, api, ws, minTTL, "")
	d.stop()
}

func asIPCError(err error, e **ipc.Error) bool {
	x, ok := err.(*ipc.Error)
	if ok {
		*e = x
	}
	return ok
}
