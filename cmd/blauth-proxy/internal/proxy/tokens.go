package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/blauth/blauth/internal/backoff"
	"github.com/blauth/blauth/ipc"
)

// DefaultGuard is the least life a token must have left to be sent, when the selection names no
// min_ttl: a request that takes a few seconds still arrives before the token expires.
const DefaultGuard = 10 * time.Second

// reconnect is the delay policy after the MCP server's notification stream ends: 250 ms
// doubling to 10 s. (Tokens follows blauthd with ipc.Follower, which has its own.)
var reconnect = backoff.Policy{Base: 250 * time.Millisecond, Max: 10 * time.Second, Factor: 2, Jitter: 0.2}

// DefaultWait is how long Current waits for a token with enough life left (the next message of
// the watch, or a reconnection) before it gives up.
const DefaultWait = 10 * time.Second

// Selection is what the proxy asks blauthd for: the same keys blauth-helper sends, so that the
// daemon resolves the credential this caller would get from `blauth-helper token`.
type Selection struct {
	Socket    string        // blauthd's socket (ipc.SocketPath)
	Workspace string        // "" for the caller's default (then pinned to the first one served)
	MinTTL    time.Duration // the least life the daemon may serve; 0 for its own minimum
	Dir       string        // the caller's working directory: its .env counts
	Environ   []string      // the caller's environment, as os.Environ gives it: its BL_* variables count
}

// request is the watch request for s, naming workspace when it is not empty.
func (s Selection) request(workspace string) (*ipc.Message, error) {
	return ipc.Caller{Workspace: workspace, Dir: s.Dir, Environ: s.Environ, MinTTL: s.MinTTL}.Request(ipc.ActionWatch)
}

// Credential is what a request is sent with: a token, the workspace it belongs to, and the API
// base it was issued for.
type Credential struct {
	Token     string
	Workspace string
	APIURL    string    // the Blaxel API base (…/v0) blauthd named for this token
	Expiry    time.Time // zero for a token that does not expire (an API key)
	// DotenvConflict is why the caller's .env would undo a command run behind the proxy
	// (ipc.DotenvConflict), nil when it would not.
	DotenvConflict error
	// RunDomains are the run_domains: of blauth's config file, as blauthd sent them with the
	// token: more domains for the /host route (see RunDomains).
	RunDomains []string
	bearer     string // "Bearer " + Token, built once per token rather than per request
}

// Bearer is the value of a credential header that sends the token.
func (c *Credential) Bearer() string {
	if c.bearer != "" {
		return c.bearer
	}
	return "Bearer " + c.Token
}

// ErrStale reports that the latest token has less life left than the guard and no newer one
// came in time.
var ErrStale = errors.New("no token with enough life left")

// errReselect ends a watch whose workspace changed under a pinned selection: it is opened again
// for the pinned workspace at once.
var errReselect = errors.New("the default workspace changed")

// Tokens follows one blauthd watch and keeps the latest answer. Run follows it; Current may be
// called from any number of goroutines meanwhile. Create it with NewTokens.
type Tokens struct {
	sel   Selection
	guard time.Duration
	wait  time.Duration
	logf  func(format string, a ...any)

	mu        sync.Mutex
	workspace string      // the selection's workspace, pinned after the first answer
	cred      *Credential // the latest token, nil after an error answer
	answerErr error       // the latest error answer (an *ipc.Error), nil after a token
	connErr   error       // why the watch is not connected now, nil while it is
	fatal     error       // set when Run gave up for good
	changed   chan struct{}
	healing   *healing // the latest erase of a refused token
}

// NewTokens checks sel and returns its Tokens. logf receives one line per problem worth
// telling (never a token); nil discards them.
func NewTokens(sel Selection, logf func(format string, a ...any)) (*Tokens, error) {
	if sel.Socket == "" {
		return nil, errors.New("no blauthd socket given")
	}
	if _, err := sel.request(sel.Workspace); err != nil {
		return nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	guard := DefaultGuard
	if sel.MinTTL > 0 {
		guard = sel.MinTTL
	}
	return &Tokens{sel: sel, guard: guard, wait: DefaultWait, logf: logf, workspace: sel.Workspace,
		connErr: fmt.Errorf("%w: not connected yet", ipc.ErrUnreachable), changed: make(chan struct{})}, nil
}

// Workspace is the workspace the tokens are for: the one asked for, or the first one served.
func (t *Tokens) Workspace() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.workspace
}

// update changes the state under the lock and wakes every waiter.
func (t *Tokens) update(f func()) {
	t.mu.Lock()
	f()
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// Run follows the watch until ctx ends (ipc.Follower): it never starts a daemon, and waits for
// one, reconnecting with backoff, whenever the stream ends (the daemon stopped or restarted,
// or is not there yet). It returns nil when ctx ends, and an error only when the daemon cannot
// serve a watch at all (it is older than protocol version 2).
func (t *Tokens) Run(ctx context.Context) error {
	for {
		req, err := t.sel.request(t.Workspace())
		if err != nil {
			return err
		}
		f := &ipc.Follower{Socket: t.sel.Socket, Request: req, Answer: t.answer, Lost: func(err error) {
			t.update(func() { t.connErr = err })
			t.logf("no token from blauthd for now: %v; waiting for it (blauth-proxy never starts one)", err)
		}}
		err = f.Run(ctx)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errReselect):
			continue
		}
		err = fmt.Errorf("%w: restart it ('blauth-helper stop')", err)
		t.update(func() { t.fatal = err })
		return err
	}
}

// answer makes m, the watch's latest answer, the current state. A token for another workspace
// than the pinned one ends the stream (errReselect).
func (t *Tokens) answer(m *ipc.Message) error {
	if e := ipc.AsError(m); e != nil {
		t.update(func() { t.cred, t.answerErr, t.connErr = nil, e, nil })
		return nil
	}
	tok, err := ipc.ParseToken(m)
	if err == nil && (!ipc.ValidValue(tok.Token) || !ipc.ValidValue(tok.Workspace)) {
		err = errors.New("a token or workspace holding CR, LF or NUL")
	}
	if err != nil {
		t.logf("blauthd sent a malformed answer: %v", err)
		e := &ipc.Error{Code: ipc.CodeInternal, Message: "blauthd sent a malformed answer: " + err.Error()}
		t.update(func() { t.cred, t.answerErr, t.connErr = nil, e, nil })
		return nil
	}
	if pinned := t.Workspace(); pinned != "" && tok.Workspace != pinned {
		return errReselect
	}
	cred := &Credential{Token: tok.Token, Workspace: tok.Workspace, APIURL: tok.APIURL, Expiry: tok.Expiry,
		DotenvConflict: ipc.DotenvConflict(tok, true), bearer: "Bearer " + tok.Token}
	if cred.RunDomains, err = ipc.ParseRunDomains(strings.Join(tok.RunDomains, ",")); err != nil {
		t.logf("blauthd sent run_domains that are not used: %v", err)
	}
	t.update(func() {
		t.cred, t.answerErr, t.connErr = cred, nil, nil
		if t.workspace == "" {
			t.workspace = tok.Workspace
		}
	})
	return nil
}

// Current returns the latest token if it has more than the guard left (the selection's
// min_ttl, else DefaultGuard). When the daemon's latest answer is an error (no credential, a
// refused one, none with min_ttl left), it returns that *ipc.Error at once. Otherwise (the latest
// token is too close to its expiry, or no answer came yet) it waits up to DefaultWait, and no
// longer than ctx, for a usable one, and then returns ErrStale or an error wrapping
// ipc.ErrUnreachable when no daemon answers. It never returns an expired token.
func (t *Tokens) Current(ctx context.Context) (Credential, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	waited := false
	for {
		t.mu.Lock()
		cred, answerErr, connErr, fatal, changed := t.cred, t.answerErr, t.connErr, t.fatal, t.changed
		t.mu.Unlock()
		switch {
		case cred != nil && (cred.Expiry.IsZero() || time.Until(cred.Expiry) > t.guard):
			return *cred, nil
		case fatal != nil:
			return Credential{}, fatal
		case answerErr != nil && connErr == nil:
			return Credential{}, answerErr
		case waited && cred != nil:
			return Credential{}, fmt.Errorf("%w: the latest token from blauthd expires at %s, and no newer one came within %s",
				ErrStale, cred.Expiry.UTC().Format(time.RFC3339), t.wait)
		case waited && answerErr != nil:
			return Credential{}, answerErr
		case waited && connErr != nil:
			return Credential{}, connErr
		case waited:
			return Credential{}, ErrStale
		}
		if timer == nil {
			timer = time.NewTimer(t.wait)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Credential{}, ctx.Err()
		case <-timer.C:
			waited = true
		}
	}
}
