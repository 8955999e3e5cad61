package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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
	w := &watcher{s: s, c: c}
	if sc, ok := c.(syscall.Conn); ok {
		w.raw, _ = sc.SyscallConn()
	}
	if refusal == nil && !s.addWatcher(w, work, req) {
		s.refused("watchers", s.cfg.MaxWatchers)
		refusal = fail(ipc.CodeBusy, fmt.Sprintf("this socket already serves %d watchers, its limit", s.cfg.MaxWatchers), "retry in a moment; close watchers you no longer use")
	}
	if refusal != nil {
		req.stamp(refusal)
		_ = ipc.WriteAnswer(c, refusal)
		return
	}
	defer s.removeWatcher(w)
	s.watch(ctx, w, req, sentMore)
}

// watcher is one watch stream. While it waits for a change it is one goroutine parked in a read
// of its connection, which ends at the client's next byte or end of stream, or at a deadline:
// its token's min_ttl, or now, when a change needs the goroutine itself. A refresh does not
// need it: the fan-out of its group writes the new message in its place (fanOut).
type watcher struct {
	s      *Server
	c      net.Conn
	raw    syscall.RawConn // c's descriptor, for the fan-out's writes; nil when it has none
	group  *watchGroup     // the watchers of the same request
	wokeAt atomic.Uint64   // the count of wakes (Server.changes) at the last one announced to it

	// mu is held by the watcher's goroutine except while it waits in its read: a fan-out that
	// takes it acts for the goroutine, which would only have woken to do the same.
	mu       sync.Mutex
	lookedAt uint64              // the count its last answer was begun at (watchAnswer.seen)
	seq      int                 // messages sent
	last     [sha256.Size]byte   // the digest of the last one
	until    time.Time           // when its last one falls under min_ttl (watchAnswer.until)
	cred     *sources.Credential // the credential its hold is on
	pending  []byte              // the rest of a message the fan-out could not write at once
	gone     bool                // the stream has ended
	writeBy  bool                // c has a write deadline (writeWatch set one)
	b        [1]byte
}

// watchGroup is the watchers of one socket that sent the same request: they get the same
// answers, so one goroutine makes each answer once and writes it to all of them.
type watchGroup struct {
	key     string
	req     request
	work    context.Context
	members map[*watcher]struct{} // under Server.mu

	mu      sync.Mutex
	kicked  uint64 // the count of the last wake of a member
	running bool   // a fanOut runs
	list    []*watcher
	buf     []byte
}

// wake tells w that its answer may have changed. It counts the change (an answer begun after
// the count reflects it, see sharedAnswer) and starts a fan-out of w's group unless one runs,
// which will take this wake in its next round.
func (w *watcher) wake() {
	n := w.s.changes.Add(1)
	for old := w.wokeAt.Load(); old < n && !w.wokeAt.CompareAndSwap(old, n); old = w.wokeAt.Load() {
	}
	g := w.group
	g.mu.Lock()
	g.kicked = max(g.kicked, n)
	start := !g.running
	g.running = true
	g.mu.Unlock()
	if start {
		go w.s.fanOut(g)
	}
}

// dirty says a change was announced to w since its last answer began. w.mu is held.
func (w *watcher) dirty() bool { return w.wokeAt.Load() > w.lookedAt }

func (s *Server) addWatcher(w *watcher, work context.Context, req request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.watchers) >= s.cfg.MaxWatchers {
		return false
	}
	key := requestKey(req.Message)
	g := s.groups[key]
	if g == nil {
		g = &watchGroup{key: key, req: req, work: work, members: map[*watcher]struct{}{}}
		s.groups[key] = g
	}
	g.members[w] = struct{}{}
	w.group = g
	s.watchers[w] = struct{}{}
	return true
}

func (s *Server) removeWatcher(w *watcher) {
	s.mu.Lock()
	delete(s.watchers, w)
	delete(w.group.members, w)
	if len(w.group.members) == 0 && s.groups[w.group.key] == w.group {
		delete(s.groups, w.group.key)
	}
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

// fanOut makes the answer of g's request after its members' wakes and writes it to each member
// whose goroutine waits in its read, with that member's seq=: one look and one encoding for the
// group, then one write per member from this goroutine, where each member's goroutine would
// otherwise wake, look and write for itself. A member it cannot serve this way (its goroutine
// is busy, a new credential needs a hold, the socket is full) has its read deadline moved to
// now, to do it itself. A write never waits here, so a stalled watcher delays nobody else. It
// runs rounds until no wake came after the last answer began.
func (s *Server) fanOut(g *watchGroup) {
	var seen uint64
	for {
		g.mu.Lock()
		if g.kicked <= seen {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		a := s.sharedAnswer(g.work, g.req, g.key, true, true)
		seen = a.seen
		s.mu.Lock()
		g.list = g.list[:0]
		for w := range g.members {
			g.list = append(g.list, w)
		}
		s.mu.Unlock()
		// Every write first, then the read deadlines they move: the last member's message
		// waits for no deadline of the others.
		written := g.list[:0]
		for _, w := range g.list {
			switch s.deliver(w, a, &g.buf) {
			case handOver:
				_ = w.c.SetReadDeadline(time.Now())
			case delivered:
				written = append(written, w)
			}
		}
		if len(written) > 0 {
			at := s.lookAgain(a.until)
			for _, w := range written {
				// A goroutine that holds its lock again sets its own deadline before it
				// reads; one that was sent a newer message since has that message's.
				if w.mu.TryLock() {
					if w.until.Equal(a.until) && w.pending == nil && !w.gone {
						_ = w.c.SetReadDeadline(at)
					}
					w.mu.Unlock()
				}
			}
		}
		clear(g.list)
	}
}

// What deliver did for a watcher.
const (
	handOver   = iota // nothing, or not all: its goroutine must look or finish the write itself
	nothingDue        // nothing was due: it is gone, or has this answer already
	delivered         // the whole message was written: its read deadline must follow the new until
)

// deliver writes a to w in place of w's goroutine, and says what it did (handOver: w's
// goroutine must look, or finish the write, itself).
func (s *Server) deliver(w *watcher, a *watchAnswer, buf *[]byte) int {
	if w.raw == nil || !w.mu.TryLock() {
		return handOver
	}
	defer w.mu.Unlock()
	switch {
	case w.gone:
		return nothingDue
	case w.seq == 0 || w.pending != nil || a.seen < w.lookedAt || a.err != nil || a.cred != nil && a.cred != w.cred:
		// Its first message, the rest of a message not yet sent (nothing may be written before
		// it), an answer older than its last, or one its goroutine must act on.
		return handOver
	}
	w.lookedAt = a.seen
	if a.digest == w.last {
		return nothingDue
	}
	if a.kind != "" {
		s.cfg.Stats.countServed(a.kind)
	}
	w.seq++
	w.last, w.until = a.digest, a.until
	*buf = a.appendTo((*buf)[:0], w.seq)
	if w.writeBy {
		_ = w.c.SetWriteDeadline(time.Time{}) // a past deadline would fail the write before it is tried
		w.writeBy = false
	}
	n, err := writeOnce(w.raw, *buf)
	if n == len(*buf) {
		return delivered
	}
	if err == nil || errors.Is(err, syscall.EAGAIN) {
		w.pending = bytes.Clone((*buf)[n:])
	}
	return handOver
}

// writeOnce writes b to rc's descriptor with the system calls it takes without waiting: it
// stops at a full socket buffer (EAGAIN) or an error.
func writeOnce(rc syscall.RawConn, b []byte) (n int, err error) {
	werr := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, e := syscall.Write(int(fd), b[n:])
			if e == syscall.EINTR {
				continue
			}
			if e != nil || m <= 0 {
				err = e
				break
			}
			n += m
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// lookAgain is when a watcher must look again although nothing announced a change: when its
// token falls under min_ttl, on the daemon's clock; never sooner than half a second, so that a
// token at its limit costs no busy loop. Zero is never.
func (s *Server) lookAgain(until time.Time) time.Time {
	if until.IsZero() {
		return time.Time{}
	}
	return time.Now().Add(max(until.Sub(s.cfg.Clock.Now()), 500*time.Millisecond))
}

// watch serves action=watch: it answers at once as get would, then sends a new complete
// message each time the answer for the same selection changes (a refresh, a source change that
// picks another credential, a logout, a failure), until the client closes the connection or the
// daemon stops. A slow or stalled watcher delays nobody else, and a refresh never waits for a
// watcher: a wake starts a fan-out, which never waits for a write.
func (s *Server) watch(ctx context.Context, w *watcher, req request, sentMore bool) {
	c := w.c
	_ = c.SetDeadline(time.Time{})
	var (
		hold    broker.Holder = noHold{}
		heldKey string
		ownLook = true // the next look makes its own answer: the first, or the first after a new hold
	)
	w.mu.Lock()
	defer func() {
		w.gone = true
		w.mu.Unlock()
		hold.Release()
	}()
	s.cfg.Stats.countWatchers(1)
	defer s.cfg.Stats.countWatchers(-1)
	for {
		// A look after a counted wake may take the group's answer; any other makes its own.
		a := s.sharedAnswer(w.group.work, req, w.group.key, !ownLook && w.dirty(), false)
		ownLook = false
		w.lookedAt = a.seen
		if a.cred != nil && a.cred != w.cred {
			w.cred = a.cred
			if k := a.cred.Key(); k != heldKey {
				// A new credential: hold it, then look again with its broadcast taken first.
				hold.Release()
				hold, heldKey = s.cfg.Broker.Hold(a.cred, w.wake), k
				ownLook = true
				continue
			}
		}
		if w.seq == 0 || a.digest != w.last {
			w.last, w.until = a.digest, a.until
			w.seq++
			// Counted before it is written, as a get is: a client that scrapes the metrics once
			// it has the message finds it counted.
			if a.kind != "" {
				s.cfg.Stats.countServed(a.kind)
			}
			if a.err != nil {
				s.log.Debug().Err(a.err).Msg("watch answer not encoded; ending the watch")
				return
			}
			if !s.writeWatch(w, a.appendTo(nil, w.seq)) {
				return
			}
		}
		if sentMore {
			return // the client sent a byte after its request: that ends the watch
		}
		_ = c.SetReadDeadline(s.lookAgain(w.until))
		// Checked after the deadline is set: a wake or a stop from now on moves it again.
		for !w.dirty() && ctx.Err() == nil {
			w.mu.Unlock()
			n, err := c.Read(w.b[:])
			w.mu.Lock()
			if (n > 0 || err != nil && !errors.Is(err, os.ErrDeadlineExceeded)) && ctx.Err() == nil {
				return // the client sent a byte or closed
			}
			if w.pending != nil {
				if !s.writeWatch(w, w.pending) {
					return
				}
				w.pending = nil
				_ = c.SetReadDeadline(s.lookAgain(w.until)) // the until of the message just finished
				continue
			}
			break // a deadline: look again
		}
		if ctx.Err() != nil {
			// The daemon is stopping (and moved every read deadline to now): say so.
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_ = ipc.WriteAnswer(c, fail(ipc.CodeShuttingDown, "blauthd is stopping", "reconnect: a daemon started by systemd or on demand will answer"))
			return
		}
	}
}

// writeWatch writes b to w. A watcher that does not read its message in time is dropped: it
// holds nothing but its own goroutine.
func (s *Server) writeWatch(w *watcher, b []byte) bool {
	_ = w.c.SetWriteDeadline(time.Now().Add(s.cfg.WatchWriteTimeout))
	w.writeBy = true
	if _, err := w.c.Write(b); err != nil {
		s.log.Debug().Err(err).Msg("watcher gone or stalled; dropping it")
		return false
	}
	return true
}

// watchAnswer is a watch message, but for its seq=, encoded once for every watcher that sent
// the same request: a group's fan-out makes it and writes it to the members it can, and the
// members whose goroutines look themselves take it too (sharedAnswer).
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
// together wait for the first one's rather than each making its own. A watcher's goroutine
// makes it on a fresh stack (onFreshStack); a fan-out, whose goroutine ends after its rounds,
// on its own (fanOut).
func (s *Server) sharedAnswer(ctx context.Context, req request, reqKey string, woken, fanOut bool) *watchAnswer {
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
	if fanOut {
		s.makeWatchAnswer(ctx, req, a)
	} else {
		onFreshStack(func() { s.makeWatchAnswer(ctx, req, a) })
	}
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

// appendTo appends a to b as message number seq of its stream.
func (a *watchAnswer) appendTo(b []byte, seq int) []byte {
	b = append(b, a.wire...)
	b = append(b, ipc.KeySeq+"="...)
	b = strconv.AppendInt(b, int64(seq), 10)
	return append(b, "\n\n"...)
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
