//go:build reliability

package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources/blconfig"
)

// killPoint is where in a refresh blauthd is killed.
type killPoint struct {
	phase string
	delay time.Duration
}

const (
	phaseBeforeRequest = "before the request reaches the API"
	phaseHanging       = "while the API holds the request"
	phaseRotated       = "API rotated, answer not yet received"
	phaseAnswered      = "answer received, write-back under way"
	phaseWritten       = "after the file was replaced"
)

func killPoints() []killPoint {
	var ps []killPoint
	for _, d := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond} {
		ps = append(ps, killPoint{phaseBeforeRequest, d})
	}
	for _, d := range []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 290 * time.Millisecond, 299 * time.Millisecond, 301 * time.Millisecond} {
		ps = append(ps, killPoint{phaseHanging, d})
	}
	for i := 0; i < 3; i++ {
		ps = append(ps, killPoint{phaseRotated, 0})
	}
	for d := time.Duration(0); d < 8*time.Millisecond; d += 500 * time.Microsecond {
		ps = append(ps, killPoint{phaseAnswered, d})
	}
	for _, d := range []time.Duration{0, 2 * time.Millisecond, 20 * time.Millisecond, 100 * time.Millisecond} {
		ps = append(ps, killPoint{phaseWritten, d})
	}
	return ps
}

// sleepPrecise waits d, spinning for the last millisecond so that sub-millisecond delays mean
// something.
func sleepPrecise(d time.Duration) {
	end := time.Now().Add(d)
	if d > 2*time.Millisecond {
		time.Sleep(d - time.Millisecond)
	}
	for time.Now().Before(end) {
	}
}

// TestReliabilityKillMidRefresh: blauthd is killed with SIGKILL at 32 points of a bl login
// refresh (the fake API holds each refresh 300ms, then rotates the refresh token). After every
// kill the bl config parses and holds either the old or the new session, whole; a restarted
// daemon refreshes with it, except when the kill fell after the API rotated the refresh token and
// before the daemon could save the new one: that session is lost, which no client can avoid
// against an API that rotates and rejects reuse. Every token served is checked to have been
// persisted first.
func TestReliabilityKillMidRefresh(t *testing.T) {
	const (
		ws    = "kill-ws"
		other = "kill-other"
		hang  = 300 * time.Millisecond
	)
	api := newFakeAPI(t, 10*time.Minute)
	base := shortDir(t)
	home := filepath.Join(base, "home")
	socket := filepath.Join(base, "run", "blauthd.sock")
	cfgPath := blconfig.DefaultPath(home)
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o700); err != nil {
		t.Fatal(err)
	}
	device := "dc-" + randHex(12)
	_, rt := api.newSession("kill-user", device)
	otherKey := "bl_kill_other_" + randHex(16)
	run.secret("API key", otherKey)
	initial := &blconfig.Config{
		Context: blconfig.Context{Workspace: ws},
		Workspaces: []blconfig.Workspace{
			{Name: ws, ID: "7f6e5d4c-0000-4000-8000-00000000aaaa", Credentials: blconfig.Credentials{
				AccessToken: api.expiredToken("kill-user", time.Minute, 2*time.Hour), RefreshToken: rt, ExpiresIn: 7200, DeviceCode: device}},
			{Name: other, Credentials: blconfig.Credentials{APIKey: otherKey}, Env: "dev"},
		},
	}
	if err := os.WriteFile(cfgPath, initial.Marshal(), 0o600); err != nil {
		t.Fatal(err)
	}

	// servedCheck asserts that a token the daemon served had its session on disk first.
	servedCheck := func(tok *ipc.Token, who string) {
		t.Helper()
		issuedRT, ok := api.issuedWith(tok.Token)
		if !ok {
			t.Errorf("%s: served a token the API never issued", who)
			return
		}
		c, err := blconfig.Read(cfgPath)
		if err != nil {
			t.Errorf("%s: the config does not parse right after a token was served: %v", who, err)
			return
		}
		w, _ := c.Workspace(ws)
		if w == nil || w.Credentials.RefreshToken != issuedRT {
			t.Errorf("%s: a token was served before its rotated refresh token reached the file", who)
		}
	}

	counts := map[string]int{}
	byPhase := map[string]map[string]int{}
	var lostAt []string
	tempsBefore := 0
	for i, kp := range killPoints() {
		label := fmt.Sprintf("kill %2d (%s +%s)", i+1, kp.phase, kp.delay)
		oldRT := rt
		api.SetHang(hang)
		api.SetFault(blaxeltest.FaultHang, -1)

		var once sync.Once
		var a *daemon
		killA := func() {
			once.Do(func() {
				_ = syscall.Kill(a.pid, syscall.SIGKILL)
			})
		}
		a = startDaemon(t, daemonOpts{api: api, home: home, socket: socket})
		reqSeen := make(chan struct{}, 1)
		switch kp.phase {
		case phaseHanging:
			api.setHooks(func(ex exchange) {
				if ex.Grant == "refresh_token" {
					select {
					case reqSeen <- struct{}{}:
					default:
					}
				}
			}, nil, nil)
		case phaseRotated:
			api.setHooks(nil, func(ex exchange) {
				if ex.Grant == "refresh_token" && ex.Status == 200 {
					killA()
					<-a.done // dead before the answer is forwarded
				}
			}, nil)
		case phaseAnswered:
			api.setHooks(nil, nil, func(ex exchange) {
				if ex.Grant == "refresh_token" && ex.Status == 200 {
					sleepPrecise(kp.delay)
					killA()
				}
			})
		default:
			api.setHooks(nil, nil, nil)
		}

		// A caller asks: the daemon has only an expired token, so it refreshes now.
		got := make(chan *ipc.Token, 1)
		go func() {
			tok, err := getOn(socket, 10*time.Second, ipc.KeyWorkspace, ws)
			if err != nil {
				tok = nil
			}
			got <- tok
		}()
		switch kp.phase {
		case phaseBeforeRequest:
			sleepPrecise(kp.delay)
			killA()
		case phaseHanging:
			select {
			case <-reqSeen:
				sleepPrecise(kp.delay)
				killA()
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: the refresh never reached the API", label)
			}
		case phaseWritten:
			if !waitFor(10*time.Second, 200*time.Microsecond, func() bool {
				c, err := blconfig.Read(cfgPath)
				if err != nil {
					return false
				}
				w, _ := c.Workspace(ws)
				return w != nil && w.Credentials.RefreshToken != oldRT
			}) {
				t.Fatalf("%s: the refreshed session never reached the file", label)
			}
			sleepPrecise(kp.delay)
			killA()
		}
		if _, err := a.waitExit(10 * time.Second); err != nil {
			t.Fatalf("%s: the daemon was not killed: %v", label, err)
		}
		api.setHooks(nil, nil, nil)
		api.SetFault(blaxeltest.FaultNone, 0)
		// A request the dead daemon sent may still be held: it ends when the fake sees the
		// connection gone or when the hold runs out (then it rotates). Judge the outcome after.
		if !waitFor(10*time.Second, time.Millisecond, func() bool { return api.TokenRequestsInFlight() == 0 }) {
			t.Fatalf("%s: the fake API still handles a token request 10s after the kill", label)
		}
		if tok := <-got; tok != nil {
			servedCheck(tok, label+", killed daemon")
		}

		// The file parses, holds the old or the new session whole, and the rest is untouched.
		c, err := blconfig.Read(cfgPath)
		if err != nil {
			t.Fatalf("%s: the bl config does not parse: %v", label, err)
		}
		w, _ := c.Workspace(ws)
		o, _ := c.Workspace(other)
		if w == nil || o == nil || o.Credentials.APIKey != otherKey || o.Env != "dev" || c.Context.Workspace != ws {
			t.Fatalf("%s: the bl config lost a workspace or its context:\n%s", label, c.Marshal())
		}
		if w.Credentials.DeviceCode != device || w.ID != initial.Workspaces[0].ID {
			t.Fatalf("%s: the session's device code or id changed", label)
		}
		fileRT := w.Credentials.RefreshToken
		// The fake's own record: a hold that ran out just after the kill rotates the token
		// with no one left to receive the answer, so the recording proxy may never see it.
		newRT, _ := api.rotatedFrom(oldRT)
		rotated := api.Consumed(oldRT)
		var state string
		switch {
		case fileRT == oldRT && !rotated:
			state = "old session, not rotated"
		case fileRT == oldRT && rotated:
			state = "old session, rotated on the API: LOST"
			lostAt = append(lostAt, label)
		case rotated && fileRT == newRT:
			state = "new session"
			if issued, ok := api.issuedWith(w.Credentials.AccessToken); !ok || issued != newRT {
				t.Errorf("%s: the file holds the new refresh token with an access token from another grant", label)
			}
		default:
			t.Fatalf("%s: the file holds a refresh token that is neither the old nor the new one", label)
		}
		counts[state]++
		if byPhase[kp.phase] == nil {
			byPhase[kp.phase] = map[string]int{}
		}
		byPhase[kp.phase][state]++
		if kp.phase == phaseRotated && state != "old session, rotated on the API: LOST" {
			t.Errorf("%s: expected the inherent loss here, got %q", label, state)
		}
		temps, _ := filepath.Glob(filepath.Join(filepath.Dir(cfgPath), ".config.yaml.tmp-*"))
		if len(temps) > tempsBefore {
			byPhase[kp.phase]["temp file left behind"] += len(temps) - tempsBefore
			tempsBefore = len(temps)
		}

		// A restarted daemon refreshes with what the file holds.
		b := startDaemon(t, daemonOpts{api: api, home: home, socket: socket})
		tok, err := b.get(ipc.KeyWorkspace, ws)
		switch {
		case state == "old session, rotated on the API: LOST":
			if err == nil || ipc.ErrorCode(err) != ipc.CodeAuthFailed {
				t.Errorf("%s: with a consumed refresh token the restarted daemon answered %v (code %q), want code=auth_failed", label, err, ipc.ErrorCode(err))
			}
			// Log in again, as the user would.
			_, rt = api.newSession("kill-user", device)
		case err != nil:
			t.Fatalf("%s: the restarted daemon cannot use the file's session: %v (code %s)", label, err, ipc.ErrorCode(err))
		default:
			if cerr := api.checkToken(tok.Token, tok.Expiry, time.Now(), time.Minute); cerr != nil {
				t.Fatalf("%s: restarted daemon: %v", label, cerr)
			}
			servedCheck(tok, label+", restarted daemon")
			rt, _ = api.issuedWith(tok.Token)
		}
		b.stop()
		// Next round: the session's access token expired again, so the next daemon refreshes.
		next := rt
		if err := blconfig.Update(cfgPath, ws, func(cr *blconfig.Credentials) {
			cr.AccessToken = api.expiredToken("kill-user", time.Minute, 2*time.Hour)
			cr.RefreshToken = next
		}); err != nil {
			t.Fatal(err)
		}
	}

	phases := make([]string, 0, len(byPhase))
	for p := range byPhase {
		phases = append(phases, p)
	}
	sort.Strings(phases)
	for _, p := range phases {
		t.Logf("FIGURE kill: %-40s %v", p, byPhase[p])
	}
	t.Logf("FIGURE kill: %d kills: %v; temp files left in ~/.blaxel: %d", len(killPoints()), counts, tempsBefore)
	t.Logf("FIGURE kill: sessions lost (API rotated, daemon killed before saving): %d: %s", len(lostAt), strings.Join(lostAt, "; "))
}
