package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/blauth/blauth/daemon/internal/broker"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// serveWatch checks a watch request as handle checks every other, and that the socket has room
// for one more watcher, then watches. sentMore says the client sent bytes after its request.
func (s *Server) serveWatch(ctx, work context.Context, c net.Conn, m *ipc.Message, sentMore bool) {
	req, refusal := checkRequest(m)
	if refusal == nil && req.version < 2 {
		refusal = fail(ipc.CodeUnknownAction, "watch needs protocol version 2", "send version=2")
	}
	w := &watcher{c: c, changes: &s.changes}
	if refusal == nil && !s.addWatcher(w) {
		s.refused("watchers", s.cfg.MaxWatchers)
		refusal = fail(ipc.CodeBusy, fmt.Sprintf("this socket already serves %d watchers, its limit", s.cfg.MaxWatchers), "retry in a moment; close watchers you no longer use")
	}
	if refusal != nil {
		req.stamp(refusal)
		_ = ipc.WriteAnswer(c, refusal)
		return
	}
	defer s.removeWatcher(w)
	s.watch(ctx, work, w, req, sentMore)
}

// watcher is one watch stream. While it waits for a change it is one goroutine parked in a read
// of its connection, which ends at the client's next byte or end of stream, at the deadline of
// its token's min_ttl, or when wakeWatchers announces a change by moving the deadline to now.
type watcher struct {
	c       net.Conn
	dirty   atomic.Bool    // a change was announced since the watcher last looked
	changes *atomic.Uint64 // the server's count of wakes (Server.changes)
	b       [1]byte
}

// wake tells w that the answer may have changed, and ends the read it waits in. The change is
// counted first: an answer looked up after the count reflects it (see sharedAnswer).
func (w *watcher) wake() {
	w.changes.Add(1)
	w.dirty.Store(true)
	_ = w.c.SetReadDeadline(time.Now())
}

func (s *Server) addWatcher(w *watcher) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.watchers) >= s.cfg.MaxWatchers {
		return false
	}
	s.watchers[w] = struct{}{}
	return true
}

func (s *Server) removeWatcher(w *watcher) {
	s.mu.Lock()
	delete(s.watchers, w)
	s.mu.Unlock()
}

// wakeWatchers wakes every watcher of this socket at each change the sources announce (which
// may pick another credential), until ctx ends: one goroutine for all of them, which never
// waits for a watcher. It takes the next broadcast before waking anyone, so a change while they
// look is not lost. A token's own changes wake only its watchers: the broker calls their wake
// through the hold each has on its credential.
func (s *Server) wakeWatchers(ctx context.Context) {
	sourcesChanged := s.cfg.Resolver.Changed()
	for {
		select {
		case <-sourcesChanged:
		case <-ctx.Done():
			return
		}
		sourcesChanged = s.cfg.Resolver.Changed()
		s.mu.Lock()
		for w := range s.watchers {
			w.wake()
		}
		s.mu.Unlock()
	}
}

// watch serves action=watch: it answers at once as get would, then sends a new complete
// message each time the answer for the same selection changes (a refresh, a source change that
// picks another credential, a logout, a failure), until the client closes the connection or the
// daemon stops. A slow or stalled watcher delays nobody else, and a refresh never waits for a
// watcher: wakeWatchers only moves read deadlines.
func (s *Server) watch(ctx, work context.Context, w *watcher, req request, sentMore bool) {
	c := w.c
	_ = c.SetDeadline(time.Time{})
	var (
		last     [sha256.Size]byte
		seq      int
		hold     broker.Holder = noHold{}
		heldCred *sources.Credential
		heldKey  string
		woken    bool // this look follows a counted wake, not a deadline or a new hold
	)
	defer func() { hold.Release() }()
	s.cfg.Stats.countWatchers(1)
	defer s.cfg.Stats.countWatchers(-1)
	reqKey := requestKey(req.Message)
	for {
		// Cleared before looking: a change announced while we look sets it again.
		w.dirty.Store(false)
		a := s.sharedAnswer(work, req, reqKey, woken)
		if a.cred != nil && a.cred != heldCred {
			heldCred = a.cred
			if k := a.cred.Key(); k != heldKey {
				// A new credential: hold it, then look again with its broadcast taken first.
				hold.Release()
				hold, heldKey = s.cfg.Broker.Hold(a.cred, w.wake), k
				woken = false
				continue
			}
		}
		if seq == 0 || a.digest != last {
			last = a.digest
			seq++
			// Counted before it is written, as a get is: a client that scrapes the metrics once
			// it has the message finds it counted.
			if a.kind != "" {
				s.cfg.Stats.countServed(a.kind)
			}
			// A watcher that does not read its message in time is dropped: it holds nothing
			// but its own goroutine.
			_ = c.SetWriteDeadline(time.Now().Add(s.cfg.WatchWriteTimeout))
			if err := a.write(c, seq); err != nil {
				s.log.Debug().Err(err).Msg("watcher gone or stalled; dropping it")
				return
			}
		}
		if sentMore {
			return // the client sent a byte after its request: that ends the watch
		}
		// Look again when the token falls under min_ttl, on the daemon's clock; never sooner than
		// half a second, so that a token at its limit costs no busy loop.
		var deadline time.Time
		if !a.until.IsZero() {
			deadline = time.Now().Add(max(a.until.Sub(s.cfg.Clock.Now()), 500*time.Millisecond))
		}
		_ = c.SetReadDeadline(deadline)
		// Checked after the deadline is set: a wake or a stop from now on moves it again.
		woken = w.dirty.Load()
		if !woken && ctx.Err() == nil {
			n, err := c.Read(w.b[:])
			if (n > 0 || err != nil && !errors.Is(err, os.ErrDeadlineExceeded)) && ctx.Err() == nil {
				return // the client sent a byte or closed
			}
			woken = w.dirty.Load()
		}
		if ctx.Err() != nil {
			// The daemon is stopping (and moved every read deadline to now): say so.
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_ = ipc.WriteAnswer(c, fail(ipc.CodeShuttingDown, "blauthd is stopping", "reconnect: a daemon started by systemd or on demand will answer"))
			return
		}
	}
}

// watchAnswer is a watch message, but for its seq=, encoded once for every watcher that sent
// the same request: a refresh wakes all the watchers of its credential at once, and the first
// to look encodes the answer they all send.
type watchAnswer struct {
	wire   []byte              // the encoded answer, without seq= and the empty line
	err    error               // why it could not be encoded
	digest [sha256.Size]byte   // what tells it from the last one sent (answerKey)
	cred   *sources.Credential // the credential it came from, nil when none
	kind   string              // the token's kind, "" for an error
	until  time.Time           // when to look again although nothing announced a change
	seen   uint64              // the count of wakes when it began to be made
	made   chan struct{}       // closed once the fields above are set
}

// sharedAnswer is what a get for req answers now, as a watch message. After a counted wake
// (woken) it is the answer another watcher with the same request began to make since that
// wake, if one did (waiting for it to be made): it began after every change counted so far, so
// it shows them, as one made now would. Any other look (the first, at a deadline, after a new
// hold) makes its own, and counts itself as a change, so that no answer begun before it is
// taken after it. An answer is offered before it is made, so that the watchers a refresh woke
// together wait for the first one's rather than each making its own.
func (s *Server) sharedAnswer(ctx context.Context, req request, reqKey string, woken bool) *watchAnswer {
	var seen uint64
	if woken {
		seen = s.changes.Load()
		if a, ok := s.recent.watches.Load(reqKey); ok && a.seen >= seen {
			<-a.made
			return a
		}
	} else {
		seen = s.changes.Add(1)
	}
	a := &watchAnswer{seen: seen, made: make(chan struct{})}
	s.recent.watches.Store(reqKey, a)
	onFreshStack(func() { s.makeWatchAnswer(ctx, req, a) })
	close(a.made)
	return a
}

// makeWatchAnswer fills a with what a get for req answers now: the message, the credential it
// came from, and when it must be looked at again even if nothing announces a change: when the
// token falls under the min_ttl it was served with.
func (s *Server) makeWatchAnswer(ctx context.Context, req request, a *watchAnswer) {
	resp, cred := s.get(ctx, req.Message, nil)
	if s.cfg.Scope != nil {
		s.cfg.Scope.redact(resp)
	}
	req.stamp(resp)
	a.cred, a.digest = cred, answerKey(resp)
	if ipc.AsError(resp) == nil {
		a.kind = resp.Value(ipc.KeyKind)
		if exp := resp.Value(ipc.KeyExpiry); exp != "" && exp != "0" {
			if n, err := strconv.ParseInt(exp, 10, 64); err == nil {
				minTTL := s.cfg.Broker.MinTTL()
				if m, err := parseSeconds(req.Value(ipc.KeyMinTTL)); err == nil && m > minTTL {
					minTTL = m
				}
				a.until = time.Unix(n, 0).Add(-minTTL)
			}
		}
	}
	resp.Add(ipc.KeySeq, "1") // checked with the seq= it will have, then cut off
	wire, err := resp.EncodeAnswer()
	if err != nil {
		a.err = err
		return
	}
	a.wire = wire[:len(wire)-len(ipc.KeySeq+"=1\n\n")]
}

// write sends a as message number seq of its stream, in one write.
func (a *watchAnswer) write(c net.Conn, seq int) error {
	if a.err != nil {
		return a.err
	}
	b := make([]byte, 0, len(a.wire)+16)
	b = append(b, a.wire...)
	b = append(b, ipc.KeySeq+"="...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, "\n\n"...)
	_, err := c.Write(b)
	return err
}

// requestKey is what makes two watch requests the same: their fields, in order.
func requestKey(m *ipc.Message) string {
	var b []byte
	for _, f := range m.Fields {
		b = append(b, f.Key...)
		b = append(b, 0)
		b = append(b, f.Value...)
		b = append(b, 0)
	}
	return string(b)
}

// answerKey is what makes two answers to a watcher different: the token and where it came
// from, or the error code and message. A hint alone (a retry countdown) is not a change.
// It is a digest, so that a watcher keeps 32 bytes between messages rather than a copy of its
// token.
func answerKey(m *ipc.Message) [sha256.Size]byte {
	var s string
	if ipc.AsError(m) != nil {
		s = "error\x00" + m.Value(ipc.KeyCode) + "\x00" + m.Value(ipc.KeyMessage)
	} else {
		s = "ok\x00" + m.Value(ipc.KeyWorkspace) + "\x00" + m.Value(ipc.KeyToken) + "\x00" + m.Value(ipc.KeyExpiry) + "\x00" +
			m.Value(ipc.KeyKind) + "\x00" + m.Value(ipc.KeySource) + "\x00" + m.Value(ipc.KeyHint)
	}
	return sha256.Sum256([]byte(s))
}

// noHold is a watcher's hold before it has a credential: nothing to release.
type noHold struct{}

func (noHold) Release() {}
