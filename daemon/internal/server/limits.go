package server

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blauth/blauth/ipc"
)

// What a connection holds at rest is kept small, because a socket's caps multiply it
// (docs/OPERATIONS.md has the arithmetic): a connection between requests holds no read buffer,
// and a watcher is one goroutine parked in a read of its connection.

// maxDraining bounds the refusals of one socket that wait (up to a second each) for their peer
// to finish sending, so that it reads its answer rather than a broken pipe. Past it, refusals
// are answered without waiting: a flood of connections costs a close each, not a goroutine.
const maxDraining = 16

// refusalLogEvery spaces the log lines of refusals: a peer that opens connections in a loop
// gets one line, then a count every so often, not a line each.
const refusalLogEvery = 5 * time.Second

// refusals counts what a socket refused since it last said so in the log.
type refusals struct {
	n      int
	logged time.Time
}

// refused counts a connection or watcher refused past its limit, and logs the count at most
// once per refusalLogEvery.
func (s *Server) refused(what string, limit int) {
	s.cfg.Stats.countRefused()
	s.mu.Lock()
	s.refusals.n++
	n, now := s.refusals.n, time.Now()
	due := now.Sub(s.refusals.logged) >= refusalLogEvery
	if due {
		s.refusals.n, s.refusals.logged = 0, now
	}
	s.mu.Unlock()
	if due {
		s.log.Warn().Str("socket", s.socket).Str("limit_of", what).Int("max", limit).Int("refused", n).
			Dur("per", refusalLogEvery).Msg("socket at its limit; refusing with code busy")
	}
}

// readers are the read buffers of requests being read; a connection takes one when its next
// request's first byte comes, and gives it back once the answer is written.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// freeRequestBytes is what a request may hold without taking from its socket's request budget:
// every get or watch a client sends fits, so small requests are never refused for the budget.
// It is counted in each connection's own cost (docs/OPERATIONS.md).
const freeRequestBytes = 4 << 10

// budgetChunk is the most a read past a request's free allowance takes from the budget.
const budgetChunk = 1 << 10

// Request budgets: what the requests of one socket may hold at once past their first
// freeRequestBytes each, while they are read and answered, and for a watch's whole life. A
// peer sending large unfinished requests on every connection of a socket would otherwise hold
// its cap times the largest request (2,048 × 64 KiB on the daemon's socket).
const (
	mainRequestBudget   = 8 << 20
	scopedRequestBudget = 256 << 10
)

// budget is a socket's request budget. Safe for concurrent use.
type budget struct {
	held atomic.Int64
	max  int64
}

// take reserves up to n bytes, as many as are left, and returns how many.
func (b *budget) take(n int) int {
	for {
		held := b.held.Load()
		k := min(int64(n), b.max-held)
		if k <= 0 {
			return 0
		}
		if b.held.CompareAndSwap(held, held+k) {
			return int(k)
		}
	}
}

func (b *budget) give(n int) { b.held.Add(-int64(n)) }

// errBudget is a request that would take its socket past its request budget.
var errBudget = errors.New("over the request budget")

// connReader reads a connection whose first byte, read while waiting for a request without a
// buffer, is held back for the buffer that reads the request. What a request reads past
// freeRequestBytes is taken from the socket's budget before it is read, until done.
type connReader struct {
	c net.Conn
	// b holds what the wait for a request read: most requests (a helper's get is 100 to 400
	// bytes) arrive whole in it, in one read.
	b      [firstRead]byte
	held   []byte // the part of b not handed out yet
	left   int    // bytes the request being read may still take from the connection
	read   int    // bytes the request being read took from it
	taken  int    // bytes of the budget it holds: what it read past freeRequestBytes
	budget *budget
	// readBy and writeBy are the connection's deadlines as last set here.
	readBy, writeBy time.Time
	req             ipc.Message // the request being read or answered (readRequest)
	room            room        // what answering it reuses
}

// keepDeadline makes the connection's write (or read) deadline d after now, unless it is that
// already, less a slack of d/16 (at most a second): requests back to back then move each
// deadline about once a second rather than once per request, which cost a timer update each.
func (r *connReader) keepDeadline(write bool, d time.Duration, now time.Time) {
	at := &r.readBy
	if write {
		at = &r.writeBy
	}
	if at.Sub(now) >= d-min(d/16, time.Second) {
		return
	}
	*at = now.Add(d)
	if write {
		_ = r.c.SetWriteDeadline(*at)
	} else {
		_ = r.c.SetReadDeadline(*at)
	}
}

// firstRead is the most the wait for a request reads before a buffer is taken for it.
const firstRead = 512

// errRequestTooLarge is a request over the bytes its socket reads for one.
var errRequestTooLarge = errors.New("request too large")

// maxRequest is how many bytes this socket reads for one request (beyond what the buffer
// already holds): ipc.MaxMessageSize, less on a scoped socket.
func (s *Server) maxRequest() int {
	if s.cfg.Scope != nil {
		return scopedMaxRequest
	}
	return ipc.MaxMessageSize
}

// wait blocks until the next request begins (reading what has come of it, up to firstRead
// bytes), or an error (the peer closed, the idle deadline passed).
func (r *connReader) wait() error {
	for {
		n, err := r.c.Read(r.b[:])
		if n > 0 {
			r.held = r.b[:n]
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (r *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(r.held) > 0 {
		n := copy(p, r.held)
		r.held = r.held[n:]
		r.left -= n
		r.read += n
		return n, nil
	}
	if r.left <= 0 {
		return 0, errRequestTooLarge
	}
	if len(p) > r.left {
		p = p[:r.left]
	}
	// Within the free allowance a read takes no more than is left of it; past it, a read takes
	// at most budgetChunk, reserved first (less if less is left), and gives back what it did not
	// use: a request waiting for more bytes holds at most budgetChunk more than it sent.
	reserved := 0
	if free := freeRequestBytes - r.read; free > 0 {
		p = p[:min(len(p), free)]
	} else {
		if reserved = r.budget.take(min(len(p), budgetChunk)); reserved == 0 {
			return 0, errBudget
		}
		p = p[:reserved]
	}
	n, err := r.c.Read(p)
	r.left -= n
	r.read += n
	if reserved > 0 {
		r.budget.give(reserved - n)
		r.taken += n
	}
	return n, err
}

// done gives back what the last request took from the budget: it was answered, or its watch
// or its connection ended.
func (r *connReader) done() {
	r.budget.give(r.taken)
	r.taken, r.read = 0, 0
}

// takeReader returns a pooled buffer reading from cr.
func takeReader(cr *connReader) *bufio.Reader {
	r := readers.Get().(*bufio.Reader)
	r.Reset(cr)
	return r
}

// giveBack returns r to the pool, unless it holds bytes not read yet (a request sent ahead of
// its turn), and reports whether it did.
func giveBack(r *bufio.Reader) bool {
	if r.Buffered() > 0 {
		return false
	}
	r.Reset(nil)
	readers.Put(r)
	return true
}

// onFreshStack runs f on a goroutine of its own and waits for it. Answering a watcher goes deep
// (resolver, broker, encoding) and grows the stack it runs on; run there, that growth is freed
// when f returns, and the watcher's own goroutine stays small while it waits for the next
// change (it saves about 4 KiB per watcher, see docs/OPERATIONS.md).
func onFreshStack(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}
