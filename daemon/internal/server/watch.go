package server

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"time"

	"github.com/blauth/blauth/daemon/internal/broker"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// serveWatch checks a watch request as handle checks every other, then watches.
func (s *Server) serveWatch(ctx, work context.Context, c net.Conn, r *bufio.Reader, m *ipc.Message) {
	req, refusal := checkRequest(m)
	if refusal == nil && req.version < 2 {
		refusal = fail(ipc.CodeUnknownAction, "watch needs protocol version 2", "send version=2")
	}
	if refusal != nil {
		req.stamp(refusal)
		_ = ipc.WriteAnswer(c, refusal)
		return
	}
	s.watch(ctx, work, c, r, req)
}

// watch serves action=watch: it answers at once as get would, then sends a new complete
// message each time the answer for the same selection changes (a refresh, a source change that
// picks another credential, a logout, a failure), until the client closes the connection or the
// daemon stops. Each watcher has its own goroutine and waits on the broker's and the sources'
// change broadcasts: a slow or stalled watcher delays nobody else, and a refresh never waits for
// a watcher.
func (s *Server) watch(ctx, work context.Context, c net.Conn, r *bufio.Reader, req request) {
	// The client sends nothing more: a byte or the end of its stream ends the watch.
	gone := make(chan struct{})
	_ = c.SetDeadline(time.Time{})
	go func() {
		_, _ = r.ReadByte()
		close(gone)
	}()
	var (
		last    string
		seq     int
		hold    broker.Holder = noHold{}
		heldKey string
	)
	defer func() { hold.Release() }()
	s.cfg.Stats.add(func(st *Stats) { st.watchers++ })
	defer s.cfg.Stats.add(func(st *Stats) { st.watchers-- })
	for {
		// Take the broadcasts before looking, so no change between the look and the wait is
		// lost: the held credential's (a refresh of another credential wakes nobody here) and
		// the sources' (which may pick another credential).
		brokerChanged, sourcesChanged := hold.Changed(), s.cfg.Resolver.Changed()
		resp, cred, until := s.watchAnswer(work, req.Message)
		if cred != nil && cred.Key() != heldKey {
			// A new credential: hold it, then look again with its broadcast taken first.
			hold.Release()
			hold, heldKey = s.cfg.Broker.Hold(cred), cred.Key()
			continue
		}
		if key := answerKey(resp); key != last {
			last = key
			seq++
			req.stamp(resp)
			resp.Add(ipc.KeySeq, strconv.Itoa(seq))
			// Counted before it is written, as a get is: a client that scrapes the metrics once
			// it has the message finds it counted.
			s.countServed(resp)
			// A watcher that does not read its message in time is dropped: it holds nothing
			// but its own goroutine.
			_ = c.SetWriteDeadline(time.Now().Add(s.cfg.WatchWriteTimeout))
			if err := ipc.WriteAnswer(c, resp); err != nil {
				s.log.Debug().Err(err).Msg("watcher gone or stalled; dropping it")
				return
			}
		}
		// Look again when the token falls under min_ttl, on the daemon's clock; never sooner than
		// half a second, so that a token at its limit costs no busy loop.
		var timer <-chan time.Time
		var t *time.Timer
		if !until.IsZero() {
			t = time.NewTimer(max(until.Sub(s.cfg.Clock.Now()), 500*time.Millisecond))
			timer = t.C
		}
		stop := func() {
			if t != nil {
				t.Stop()
			}
		}
		select {
		case <-brokerChanged:
			stop()
		case <-sourcesChanged:
			stop()
		case <-timer:
		case <-gone:
			stop()
			if ctx.Err() == nil {
				return // the client closed
			}
			// The daemon is stopping and woke every reader: say so, as below.
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_ = ipc.WriteAnswer(c, fail(ipc.CodeShuttingDown, "blauthd is stopping", "reconnect: a daemon started by systemd or on demand will answer"))
			return
		}
	}
}

// watchAnswer is what a get for req answers now, the credential it came from, and when it must
// be looked at again even if nothing announces a change: when the token falls under the
// min_ttl it was served with.
func (s *Server) watchAnswer(ctx context.Context, req *ipc.Message) (*ipc.Message, *sources.Credential, time.Time) {
	resp, cred := s.get(ctx, req)
	var until time.Time
	if exp := resp.Value(ipc.KeyExpiry); ipc.AsError(resp) == nil && exp != "" && exp != "0" {
		if n, err := strconv.ParseInt(exp, 10, 64); err == nil {
			minTTL := s.cfg.Broker.MinTTL()
			if m, err := parseSeconds(req.Value(ipc.KeyMinTTL)); err == nil && m > minTTL {
				minTTL = m
			}
			until = time.Unix(n, 0).Add(-minTTL)
		}
	}
	return resp, cred, until
}

// answerKey is what makes two answers to a watcher different: the token and where it came
// from, or the error code and message. A hint alone (a retry countdown) is not a change.
func answerKey(m *ipc.Message) string {
	if ipc.AsError(m) != nil {
		return "error\x00" + m.Value(ipc.KeyCode) + "\x00" + m.Value(ipc.KeyMessage)
	}
	return "ok\x00" + m.Value(ipc.KeyWorkspace) + "\x00" + m.Value(ipc.KeyToken) + "\x00" + m.Value(ipc.KeyExpiry) + "\x00" +
		m.Value(ipc.KeyKind) + "\x00" + m.Value(ipc.KeySource) + "\x00" + m.Value(ipc.KeyHint)
}

// noHold is a watcher's hold before it has a credential: nothing to announce or release.
type noHold struct{}

func (noHold) Changed() <-chan struct{} { return nil }
func (noHold) Release()                 {}
