package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// DeviceGrant is the start of Blaxel's device login.
type DeviceGrant struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
}

// slowDownStep is how much a slow_down answer adds to the polling interval (RFC 8628 §3.5).
var slowDownStep = 5 * time.Second

// loginFlows runs device logins started by blauth-helper login. Each flow polls the token
// endpoint in the background at the server's interval; helpers wait on it in short steps so
// they can show progress. Safe for concurrent use.
type loginFlows struct {
	d     *Daemon
	mu    sync.Mutex
	flows map[string]*loginFlow
}

type loginFlow struct {
	workspace string
	done      chan struct{}
	cancel    context.CancelFunc
	err       *ipc.Error
}

// maxLoginFlows bounds device logins in progress at once.
const maxLoginFlows = 8

func newLoginFlows(d *Daemon) *loginFlows { return &loginFlows{d: d, flows: map[string]*loginFlow{}} }

func (l *loginFlows) httpClient() *http.Client { return l.d.cfg.HTTP }

func (l *loginFlows) start(ctx context.Context, req *ipc.Message) *ipc.Message {
	ws := req.Value(ipc.KeyWorkspace)
	if ws == "" {
		return fail(ipc.CodeBadRequest, "a workspace is required", "blauth-helper login WORKSPACE")
	}
	if l.d.cfg.BLConfigPath == "" {
		return fail(ipc.CodeBadRequest, "this daemon does not use the bl config, where sessions are saved", "")
	}
	base := l.d.resolver.DaemonBaseURL(ws)
	body, _ := json.Marshal(map[string]string{"client_id": "blaxel", "scope": "offline_access"})
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(rctx, http.MethodPost, base+"/login/device", bytes.NewReader(body))
	if err != nil {
		return fail(ipc.CodeBadRequest, err.Error(), "")
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := l.httpClient().Do(hreq)
	if err != nil {
		return fail(ipc.CodeUnavailable, "device login could not start: "+scrubURLError(err).Error(), "check your network and BL_API_URL / BL_ENV")
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var g DeviceGrant
	if resp.StatusCode/100 != 2 || json.Unmarshal(data, &g) != nil || g.DeviceCode == "" {
		e := classify("device login", resp.StatusCode, resp.Header, data, time.Now())
		return fail(ipc.CodeUnavailable, e.Error(), "")
	}
	if g.Interval <= 0 {
		g.Interval = 5
	}
	if g.ExpiresIn <= 0 {
		g.ExpiresIn = 600
	}
	id := randomID()
	pctx, cancel := context.WithCancel(l.d.life)
	f := &loginFlow{workspace: ws, done: make(chan struct{}), cancel: cancel}
	l.mu.Lock()
	// One login per workspace: a new one replaces the old. And a bound on all of them, since
	// each polls for up to the code's lifetime.
	for oid, o := range l.flows {
		if o.workspace == ws {
			o.cancel()
			delete(l.flows, oid)
		}
	}
	if len(l.flows) >= maxLoginFlows {
		l.mu.Unlock()
		cancel()
		return fail(ipc.CodeUnavailable, fmt.Sprintf("%d device logins are already in progress", maxLoginFlows), "finish or interrupt one of them")
	}
	l.flows[id] = f
	l.mu.Unlock()
	go l.poll(pctx, id, f, base, g)
	return ok("flow", id, ipc.KeyWorkspace, ws, ipc.KeyUserCode, g.UserCode,
		ipc.KeyVerificationURI, g.VerificationURI, ipc.KeyVerificationURIComplete, g.VerificationURIComplete,
		ipc.KeyInterval, strconv.Itoa(g.Interval), "expires_in", strconv.Itoa(g.ExpiresIn))
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// poll asks the token endpoint for the session until the user approves, the code expires, or
// the server refuses.
func (l *loginFlows) poll(ctx context.Context, id string, f *loginFlow, base string, g DeviceGrant) {
	defer close(f.done)
	defer f.cancel()
	defer func() {
		// Keep the result a while for a helper that reconnects, then forget the flow.
		time.AfterFunc(time.Minute, func() { l.mu.Lock(); delete(l.flows, id); l.mu.Unlock() })
	}()
	interval := time.Duration(g.Interval) * time.Second
	deadline := time.Now().Add(time.Duration(g.ExpiresIn) * time.Second)
	for {
		select {
		case <-ctx.Done():
			f.err = &ipc.Error{Code: ipc.CodeLoginExpired, Message: "the login was replaced by a newer one, or blauthd is stopping"}
			return
		case <-time.After(interval):
		}
		if time.Now().After(deadline) {
			f.err = &ipc.Error{Code: ipc.CodeLoginExpired, Message: "the login code expired before it was approved", Hint: "run blauth-helper login again"}
			return
		}
		grant, pending, slow, err := l.pollOnce(ctx, base, g.DeviceCode)
		switch {
		case pending:
			if slow {
				interval += slowDownStep
			}
			continue
		case err != nil:
			if xe, ok := err.(*ExchangeError); ok && xe.Permanent {
				f.err = &ipc.Error{Code: ipc.CodeLoginExpired, Message: "device login failed: " + err.Error(), Hint: "run blauth-helper login again"}
				return
			}
			l.d.log.Warn().Err(err).Msg("device login poll failed; retrying")
			continue
		}
		perr := sources.UpdateBLCredentials(l.d.cfg.BLConfigPath, f.workspace, func(cr *sources.BLCredentials) {
			*cr = sources.BLCredentials{AccessToken: grant.AccessToken, RefreshToken: grant.RefreshToken, ExpiresIn: grant.ExpiresIn, DeviceCode: g.DeviceCode}
			if cr.ExpiresIn == 0 {
				cr.ExpiresIn = int(grant.Lifetime().Seconds())
			}
		})
		if perr != nil {
			f.err = &ipc.Error{Code: ipc.CodeInternal, Message: "logged in, but the session could not be saved: " + perr.Error()}
			return
		}
		l.d.resolver.Reload(ctx)
		l.d.log.Info().Str("workspace", f.workspace).Msg("device login complete; session saved to the bl config")
		return
	}
}

func (l *loginFlows) pollOnce(ctx context.Context, base, deviceCode string) (g *Grant, pending, slow bool, err error) {
	body, _ := json.Marshal(map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": "blaxel", "device_code": deviceCode})
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	hreq, _ := http.NewRequestWithContext(rctx, http.MethodPost, base+"/oauth/token", bytes.NewReader(body))
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := l.httpClient().Do(hreq)
	if err != nil {
		return nil, false, false, &ExchangeError{Op: "device login", Err: scrubURLError(err)}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusAccepted {
		return nil, true, false, nil
	}
	if resp.StatusCode/100 != 2 {
		e := classify("device login", resp.StatusCode, resp.Header, data, time.Now())
		switch e.Code {
		case "authorization_pending":
			return nil, true, false, nil
		case "slow_down":
			return nil, true, true, nil
		}
		return nil, false, false, e
	}
	var tr struct {
		AccessToken  string          `json:"access_token"`
		RefreshToken string          `json:"refresh_token"`
		ExpiresIn    json.RawMessage `json:"expires_in"`
	}
	if json.Unmarshal(data, &tr) != nil || tr.AccessToken == "" {
		return nil, false, false, &ExchangeError{Op: "device login", Status: resp.StatusCode, Description: "the answer is not a token response"}
	}
	g = &Grant{AccessToken: tr.AccessToken, RefreshToken: tr.RefreshToken, ExpiresIn: parseExpiresIn(tr.ExpiresIn)}
	if err := g.setExpiry(time.Now().Round(0)); err != nil {
		return nil, false, false, &ExchangeError{Op: "device login", Description: err.Error()}
	}
	return g, false, false, nil
}

// wait waits up to wait= seconds (at most 30) for a flow to finish.
func (l *loginFlows) wait(ctx context.Context, req *ipc.Message) *ipc.Message {
	id := req.Value("flow")
	l.mu.Lock()
	f := l.flows[id]
	l.mu.Unlock()
	if f == nil {
		return fail(ipc.CodeBadRequest, "no such login in progress", "run blauth-helper login again")
	}
	w := 5 * time.Second
	if s := strings.TrimSpace(req.Value("wait")); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 30 {
			w = time.Duration(n) * time.Second
		}
	}
	select {
	case <-f.done:
	case <-time.After(w):
		return fail(ipc.CodeLoginPending, "waiting for the login to be approved", "")
	case <-ctx.Done():
		return fail(ipc.CodeShuttingDown, "blauthd is stopping", "")
	}
	if f.err != nil {
		return ipc.ErrorMessage(f.err)
	}
	return ok(ipc.KeyWorkspace, f.workspace, "saved", l.d.cfg.BLConfigPath)
}
