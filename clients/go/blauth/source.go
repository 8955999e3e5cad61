package blauth

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/blauth/blauth/ipc"
)

// TokenSource is an oauth2.TokenSource backed by a watch on blauthd: one connection that the
// daemon sends a complete answer on at every change (a refresh, a source change, a logout), so
// that Token returns the daemon's latest token without a round trip. It never starts a daemon:
// when the daemon goes away (a restart, a 'blauth-helper stop') it waits for one and reconnects
// with backoff (ipc.Follower: 250 ms doubling to 4 s), keeping the last token while that token
// has enough life left; socket activation or the user's next blauth-helper command brings a
// daemon back.
//
// It is safe for concurrent use. Create it with NewTokenSource; the zero value is not usable.
type TokenSource struct {
	s      *settings
	ctx    context.Context // ends the watch goroutine
	cancel context.CancelFunc
	done   chan struct{} // closed when the watch goroutine has returned
	now    func() time.Time

	mu      sync.Mutex
	tok     *ipc.Token    // the daemon's latest token, nil after an error answer
	err     error         // the daemon's latest error answer, nil after a token
	down    error         // why the stream is down now, nil while connected
	changed chan struct{} // closed and replaced at every change of tok, err or down
}

var _ oauth2.TokenSource = (*TokenSource)(nil)

// NewTokenSource opens a watch on the daemon and waits (Options.Timeout at most) for its first
// answer. It fails when no daemon answers (an error wrapping ErrUnreachable) or when that first
// answer is an error (no_credentials, auth_failed, …: an error wrapping an *Error), so that a
// misconfigured program stops at start. From then on the watch runs in a goroutine until ctx is
// done or Close is called; it reconnects on its own.
func NewTokenSource(ctx context.Context, opts Options) (*TokenSource, error) {
	s, req, err := opts.resolve(ipc.ActionWatch)
	if err != nil {
		return nil, err
	}
	ts := &TokenSource{s: s, done: make(chan struct{}), now: time.Now, changed: make(chan struct{})}
	ts.ctx, ts.cancel = context.WithCancel(ctx)
	first := make(chan error, 1) // how the watch started: nil once a token came
	started := false             // first was sent; read and written by the watch goroutine only
	start := func(err error) {
		if !started {
			started = true
			first <- err
		}
	}
	f := &ipc.Follower{Socket: s.socket, Request: req, Timeout: s.timeout,
		Answer: func(m *ipc.Message) error {
			if e := ipc.AsError(m); e != nil && !started {
				start(e)
				return e
			}
			ts.update(m)
			start(nil)
			return nil
		},
		Lost: func(err error) {
			start(err)
			ts.setDown(err)
		},
	}
	go func() {
		defer close(ts.done)
		err := f.Run(ts.ctx)
		if err != nil {
			ts.setDown(err)
		} else {
			err = ErrClosed // the context ended
		}
		start(err)
	}()
	if err := <-first; err != nil {
		ts.cancel()
		<-ts.done
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, fmt.Errorf("blauth: watch %s: %w", s.what(), err)
	}
	return ts, nil
}

// update makes m, a complete answer for our selection, the current state.
func (ts *TokenSource) update(m *ipc.Message) {
	t, err := ipc.ParseToken(m)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.tok, ts.err, ts.down = t, err, nil
	close(ts.changed)
	ts.changed = make(chan struct{})
}

// setDown records that the stream is down, and why; the last token is kept.
func (ts *TokenSource) setDown(err error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.down = err
	close(ts.changed)
	ts.changed = make(chan struct{})
}

// Token returns the daemon's latest token. It never returns one with less than Options.MinTTL
// of life left: when the latest is that old (the daemon is away, or the clock jumped), it waits
// up to Options.Wait for a newer one, then fails with an error wrapping an *Error of code
// unavailable (and, when the daemon cannot be reached, ErrUnreachable). When the daemon's latest
// answer is an error (a logout, a refused credential), Token returns it at once, wrapped.
func (ts *TokenSource) Token() (*oauth2.Token, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		ts.mu.Lock()
		tok, answer, down, changed := ts.tok, ts.err, ts.down, ts.changed
		ts.mu.Unlock()
		if ts.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if answer != nil {
			return nil, fmt.Errorf("blauth: no token for %s: %w", ts.s.what(), answer)
		}
		var stale error
		if tok == nil {
			stale = fmt.Errorf("blauth: %w", &Error{Code: CodeInternal, Message: "blauthd sent an answer that is neither a token nor an error"})
		} else if stale = ts.s.check(tok, ts.now()); stale == nil {
			return oauthToken(tok), nil
		}
		if timer == nil {
			timer = time.NewTimer(ts.s.wait)
		}
		select {
		case <-changed:
			continue
		case <-ts.ctx.Done():
			return nil, ErrClosed
		case <-timer.C:
		}
		if down != nil {
			return nil, fmt.Errorf("%w; blauthd sent no newer one within %s: %w", stale, ts.s.wait, down)
		}
		return nil, fmt.Errorf("%w; blauthd sent no newer one within %s", stale, ts.s.wait)
	}
}

// Workspace returns the workspace of the daemon's latest token (the one asked for, or the
// default the daemon resolved), or the one asked for while the latest answer is an error.
func (ts *TokenSource) Workspace() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.tok != nil {
		return ts.tok.Workspace
	}
	return ts.s.workspace
}

// Close ends the watch and waits for its goroutine to return. Token fails with ErrClosed
// afterwards. Close may be called more than once.
func (ts *TokenSource) Close() error {
	ts.cancel()
	<-ts.done
	return nil
}

// Connected reports whether the watch stream is up now, and if not, why.
func (ts *TokenSource) Connected() (bool, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.down == nil, ts.down
}
