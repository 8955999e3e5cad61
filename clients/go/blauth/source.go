package blauth

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/blauth/blauth/ipc"
)

// Reconnection delays after a watch stream ends: 250 ms, doubling to 10 s while the daemon
// stays away, back to 250 ms once a stream delivered a message.
const (
	reconnectFirst = 250 * time.Millisecond
	reconnectMax   = 10 * time.Second
)

// TokenSource is an oauth2.TokenSource backed by a watch on blauthd: one connection that the
// daemon sends a complete answer on at every change (a refresh, a source change, a logout), so
// that Token returns the daemon's latest token without a round trip. It reconnects with backoff
// when the daemon goes away (a restart; socket activation brings it back), keeping the last
// token while that token has enough life left.
//
// It is safe for concurrent use. Create it with NewTokenSource; the zero value is not usable.
type TokenSource struct {
	s      *settings
	req    *ipc.Message
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
	ts := &TokenSource{s: s, req: req, done: make(chan struct{}), now: time.Now, changed: make(chan struct{})}
	ts.ctx, ts.cancel = context.WithCancel(ctx)
	st, first, err := ts.open(ts.ctx)
	if err != nil {
		ts.cancel()
		return nil, fmt.Errorf("blauth: watch %s: %w", s.what(), err)
	}
	if e := ipc.AsError(first); e != nil {
		st.Close()
		ts.cancel()
		return nil, fmt.Errorf("blauth: watch %s: %w", s.what(), e)
	}
	ts.update(first)
	go ts.run(st)
	return ts, nil
}

// open connects, sends the watch request and reads the first answer within the timeout.
func (ts *TokenSource) open(ctx context.Context) (*ipc.Stream, *ipc.Message, error) {
	c, err := ipc.Dial(ts.s.socket, min(dialTimeout, ts.s.timeout))
	if err != nil {
		return nil, nil, err
	}
	st, err := c.Watch(ts.req)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, ts.s.timeout,
		fmt.Errorf("blauthd did not answer within %s", ts.s.timeout))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	m, err := st.Next()
	if !stop() {
		// The deadline or the caller's cancellation closed the stream, maybe after Next read
		// an answer: it is unusable either way.
		st.Close()
		return nil, nil, context.Cause(ctx)
	}
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, m, nil
}

// run follows the stream until it ends, then reconnects with backoff, until ts.ctx is done.
func (ts *TokenSource) run(st *ipc.Stream) {
	defer close(ts.done)
	wait := time.Duration(0)
	for {
		if st != nil {
			err := ts.follow(st)
			if ts.ctx.Err() != nil {
				return
			}
			ts.setDown(err)
			wait = 0
			st = nil
		}
		wait = min(max(2*wait, reconnectFirst), reconnectMax)
		t := time.NewTimer(wait)
		select {
		case <-ts.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		next, first, err := ts.open(ts.ctx)
		if ts.ctx.Err() != nil {
			if next != nil {
				next.Close()
			}
			return
		}
		if err != nil {
			ts.setDown(err)
			continue
		}
		if e := connectionError(first); e != nil {
			next.Close()
			ts.setDown(e)
			continue
		}
		ts.update(first)
		st = next
	}
}

// connectionError returns the error of an answer that speaks of the connection rather than of
// the token asked for (the daemon stops, or has no room for us): the last token stays good.
func connectionError(m *ipc.Message) error {
	switch e := ipc.AsError(m); ipc.ErrorCode(e) {
	case ipc.CodeShuttingDown, ipc.CodeBusy:
		return e
	}
	return nil
}

// follow hands each message of st to update until the stream ends, and returns why.
func (ts *TokenSource) follow(st *ipc.Stream) error {
	defer st.Close()
	stop := context.AfterFunc(ts.ctx, func() { st.Close() })
	defer stop()
	for {
		m, err := st.Next()
		if err != nil {
			return err
		}
		if e := connectionError(m); e != nil {
			return e
		}
		ts.update(m)
	}
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
