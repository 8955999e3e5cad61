package ipc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

// The delays of a Follower between two connections: FollowFirstDelay after a stream that
// delivered a token ends, doubling at each try that brings none, FollowMaxDelay at most (with
// a fifth of jitter either way, so that the watchers of a restarted daemon do not come back
// in step).
const (
	FollowFirstDelay = 250 * time.Millisecond
	FollowMaxDelay   = 4 * time.Second
)

// ErrOldDaemon reports a daemon older than watch (protocol version 2): it answered a watch's
// first message with unknown_action or unsupported_version. Restarting it (blauth-helper stop,
// then any command) brings the installed version.
var ErrOldDaemon = errors.New("this blauthd is older than watch (protocol version 2)")

// Follower follows one watch on the daemon's socket for as long as its context lasts: it dials,
// sends the request, hands every answer on, and when the stream ends or no daemon answers it
// dials again after a delay (FollowFirstDelay doubling to FollowMaxDelay). It never starts a
// daemon: one comes back through socket activation or the user's next command.
//
// Set the fields, then call Run, once. A Follower is not safe for concurrent use; its
// callbacks run on Run's goroutine, one at a time.
type Follower struct {
	// Socket is the daemon's socket.
	Socket string
	// Request is the watch request (action=watch), sent as is on every connection.
	Request *Message
	// Answer is given each answer about the selection, in order: a token (status=ok), or an
	// error answer (no_credentials, auth_failed, unavailable, …) after which the stream goes on.
	// The answers that speak of the connection (shutting_down, busy) go to Lost instead. An
	// error Answer returns ends Run with that error.
	Answer func(*Message) error
	// Lost, when set, is told why the follower has no stream to read: when a stream ends or a
	// dial fails, and again only when the reason changes, not at every retry, until a token
	// comes. The reason wraps ErrUnreachable when no daemon answers on the socket; it is an
	// *Error of code shutting_down or busy when the daemon said so.
	Lost func(error)
	// Timeout bounds the dial, the writing of the request and the wait for each connection's
	// first answer (which may wait on the token endpoint); GetBudget + 10 s when zero.
	Timeout time.Duration
}

// stopError is what ends Run rather than a stream: Answer's error, or an old daemon.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }

// Run follows until ctx ends (it returns nil then), until Answer returns an error (Run returns
// it), or until the daemon turns out to be older than watch (an error wrapping ErrOldDaemon and
// the daemon's *Error).
func (f *Follower) Run(ctx context.Context) error {
	if f.Request == nil || f.Answer == nil {
		return errors.New("ipc: a Follower needs a Request and an Answer")
	}
	said := "" // the reason Lost was last told, until a token comes
	for tries := 0; ; tries++ {
		gotToken, err := f.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var stop *stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		if gotToken {
			tries, said = 0, ""
		}
		if f.Lost != nil && err.Error() != said {
			said = err.Error()
			f.Lost(err)
		}
		t := time.NewTimer(followDelay(tries))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// followDelay is the wait before the next dial after tries fruitless ones.
func followDelay(tries int) time.Duration {
	d := FollowMaxDelay
	if tries < 8 {
		d = min(FollowFirstDelay<<tries, FollowMaxDelay)
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// stream follows one connection until it ends, and reports whether it delivered a token.
func (f *Follower) stream(ctx context.Context) (gotToken bool, err error) {
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = GetBudget + 10*time.Second
	}
	c, err := Dial(f.Socket, timeout)
	if err != nil {
		return false, err
	}
	s, err := c.Watch(f.Request)
	if err != nil {
		c.Close()
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer func() {
		stop()
		s.Close()
	}()
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	for first := true; ; first = false {
		m, err := s.Next()
		if first && errors.Is(err, os.ErrDeadlineExceeded) {
			return false, fmt.Errorf("blauthd did not answer the watch within %s", timeout)
		}
		if err != nil {
			return gotToken, err
		}
		if first {
			_ = c.conn.SetReadDeadline(time.Time{})
		}
		e := AsError(m)
		switch code := ErrorCode(e); {
		case e == nil:
			gotToken = true
		case first && (code == CodeUnknownAction || code == CodeUnsupportedVersion):
			return false, &stopError{fmt.Errorf("%w: %w", ErrOldDaemon, e)}
		case code == CodeShuttingDown || code == CodeBusy:
			return gotToken, e
		}
		if err := f.Answer(m); err != nil {
			return gotToken, &stopError{err}
		}
	}
}
