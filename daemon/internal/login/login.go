// Package login runs device logins (blauth-helper login WORKSPACE): it starts the device flow
// at the workspace's token endpoint, polls it in the background at the server's interval, and
// hands the session to a Save function (the daemon saves it where bl saves it). A helper waits
// on a flow in short steps, so it can show progress and reconnect. Safe for concurrent use.
package login

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon/internal/token"
)

// Errors of Start and Wait.
var (
	// ErrPending reports a flow still waiting for the user.
	ErrPending = errors.New("waiting for the login to be approved")
	// ErrUnknownFlow reports a flow id that never existed or was forgotten (a minute after it ended).
	ErrUnknownFlow = errors.New("no such login in progress")
	// ErrTooMany reports that MaxFlows logins are already in progress.
	ErrTooMany = errors.New("too many device logins in progress")
	// ErrEnded reports a login that was replaced by a newer one for its workspace, or cut short
	// because the daemon stops.
	ErrEnded = errors.New("the login was replaced by a newer one, or blauthd is stopping")
	// ErrNotSaved wraps the error of a login that was approved but could not be saved.
	ErrNotSaved = errors.New("logged in, but the session could not be saved")
)

// MaxFlows bounds the logins in progress at once: each polls for up to its code's lifetime.
const MaxFlows = 8

// keepEnded is how long an ended flow's outcome is kept for a helper that asks again.
const keepEnded = time.Minute

// Config configures Flows.
type Config struct {
	Tokens token.Client
	// Save stores an approved session for workspace (deviceCode is the login's).
	Save func(workspace, deviceCode string, t *token.Token) error
	Log  zerolog.Logger
}

// Flows are the device logins in progress. The zero value is not usable: use New.
type Flows struct {
	cfg   Config
	ctx   context.Context // the logins' polling ends with it
	mu    sync.Mutex
	flows map[string]*flow
}

type flow struct {
	workspace string
	done      chan struct{}
	cancel    context.CancelFunc
	err       error // set before done is closed
}

// New returns Flows whose polling runs until ctx ends.
func New(ctx context.Context, cfg Config) *Flows {
	return &Flows{cfg: cfg, ctx: ctx, flows: map[string]*flow{}}
}

// Start begins a device login for workspace at the API base: it returns the flow's id and what
// to show the user. A login already in progress for the workspace is replaced.
func (l *Flows) Start(ctx context.Context, workspace, base string) (string, *token.DeviceAuth, error) {
	// Checked before the device-auth request too, so a refused login costs the endpoint nothing.
	l.mu.Lock()
	full := l.inProgress(workspace) >= MaxFlows
	l.mu.Unlock()
	if full {
		return "", nil, fmt.Errorf("%w (%d)", ErrTooMany, MaxFlows)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	da, err := l.cfg.Tokens.DeviceAuth(rctx, base)
	if err != nil {
		return "", nil, err
	}
	if da.Interval <= 0 {
		da.Interval = 5
	}
	if da.ExpiresIn <= 0 {
		da.ExpiresIn = 600
	}
	id := randomID()
	pctx, stop := context.WithCancel(l.ctx)
	f := &flow{workspace: workspace, done: make(chan struct{}), cancel: stop}
	l.mu.Lock()
	for oid, o := range l.flows {
		if o.workspace == workspace {
			o.cancel()
			delete(l.flows, oid)
		}
	}
	if l.inProgress(workspace) >= MaxFlows {
		l.mu.Unlock()
		stop()
		return "", nil, fmt.Errorf("%w (%d)", ErrTooMany, MaxFlows)
	}
	l.flows[id] = f
	l.mu.Unlock()
	go l.poll(pctx, id, f, base, da)
	return id, da, nil
}

// inProgress counts the logins still polling, other than workspace's (a new login replaces it).
// Ended ones kept for keepEnded do not count. l.mu must be held.
func (l *Flows) inProgress(workspace string) int {
	n := 0
	for _, f := range l.flows {
		select {
		case <-f.done:
		default:
			if f.workspace != workspace {
				n++
			}
		}
	}
	return n
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// poll waits for the user's answer and saves the session.
func (l *Flows) poll(ctx context.Context, id string, f *flow, base string, da *token.DeviceAuth) {
	defer close(f.done)
	defer f.cancel()
	defer time.AfterFunc(keepEnded, func() { l.mu.Lock(); delete(l.flows, id); l.mu.Unlock() })
	t, err := token.WaitDevice(ctx, l.cfg.Tokens, base, da, func(err error) {
		l.cfg.Log.Warn().Err(err).Msg("device login poll failed; retrying")
	})
	switch {
	case ctx.Err() != nil:
		f.err = ErrEnded
	case err != nil:
		f.err = err
	default:
		if err := l.cfg.Save(f.workspace, da.DeviceCode, t); err != nil {
			f.err = fmt.Errorf("%w: %w", ErrNotSaved, err)
			return
		}
		l.cfg.Log.Info().Str("workspace", f.workspace).Msg("device login complete; session saved")
	}
}

// Wait waits up to d for flow id to end. It returns the flow's workspace, and nil once the
// session is saved, ErrPending when d ran out first, or why the login failed.
func (l *Flows) Wait(ctx context.Context, id string, d time.Duration) (string, error) {
	l.mu.Lock()
	f := l.flows[id]
	l.mu.Unlock()
	if f == nil {
		return "", ErrUnknownFlow
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.done:
		return f.workspace, f.err
	case <-t.C:
		return f.workspace, ErrPending
	case <-ctx.Done():
		return f.workspace, ErrEnded
	}
}
