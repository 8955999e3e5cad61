// Package server answers blauthd's socket: it accepts connections on a listener, checks that
// each peer is the daemon's own user, reads requests (package ipc), and dispatches each to the
// handler of its action, which asks the resolver which credential serves it and the broker for
// its token. Every error becomes an ipc code and hint in one place (errors.go). A Server serves
// one listener; the daemon may run several.
package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/internal/backoff"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/internal/recent"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/keyring"
)

// Config is what a Server serves, and how.
type Config struct {
	Log      zerolog.Logger
	Resolver Resolver
	Broker   Broker
	// Keyring is the store behind blauth-helper login --api-key; nil answers keyring_unavailable.
	Keyring keyring.Store
	// KeyringOff is why there is no Keyring, reported by ping, status and keyring_set.
	KeyringOff string
	// Logins runs device logins; nil when the daemon has no bl config to save sessions in.
	Logins       Logins
	BLConfigPath string
	Clock        clock.Clock
	// Version and Manager are reported by ping and status; Started by status.
	Version, Manager string
	Started          time.Time
	// Reload re-reads every source (action=reload); Stop stops the daemon (action=stop).
	Reload func(ctx context.Context)
	Stop   func()
	// Stats, when set, counts what the server did (shared by the daemon's servers, for metrics).
	Stats *Stats
	// Scope, when set, restricts this socket to some workspaces and actions (a forwarded socket).
	Scope *Scope
	// Timeouts and bounds: see daemon.Config.
	RequestTimeout, IdleTimeout, WatchWriteTimeout time.Duration
	// MaxConns bounds this socket's open connections, its watchers included; MaxWatchers bounds
	// its watch streams. Past either, a new one is answered code=busy. Both must be positive.
	MaxConns, MaxWatchers int
	// RunDomains go with every token answer (ipc.KeyRunDomains): see daemon.Config.
	RunDomains []string
}

// Stats count what servers did. The zero value is ready; safe for concurrent use. Counting
// is a few atomic adds: a get counts the token it served.
type Stats struct {
	served   [len(servedKinds)]atomic.Int64 // tokens served by kind (get answers and watch messages)
	refused  atomic.Int64                   // connections refused: another user, or over the limit
	watchers atomic.Int64                   // watch streams open now
}

// servedKinds are the kinds of token Stats count, every kind a credential has.
var servedKinds = [...]string{ipc.KindAPIKey, ipc.KindClientCredentials, ipc.KindLogin}

// Snapshot returns the counts: tokens served by kind (the kinds served at least once),
// connections refused, watchers open.
func (st *Stats) Snapshot() (served map[string]int, refused, watchers int) {
	served = map[string]int{}
	for i, k := range servedKinds {
		if n := st.served[i].Load(); n > 0 {
			served[k] = int(n)
		}
	}
	return served, int(st.refused.Load()), int(st.watchers.Load())
}

// countServed counts a token of kind served; nothing when st is nil.
func (st *Stats) countServed(kind string) {
	if st == nil {
		return
	}
	for i, k := range servedKinds {
		if k == kind {
			st.served[i].Add(1)
			return
		}
	}
}

// countRefused counts a connection refused; countWatchers adds d to the watchers open.
// Neither does anything when st is nil.
func (st *Stats) countRefused() {
	if st != nil {
		st.refused.Add(1)
	}
}

func (st *Stats) countWatchers(d int64) {
	if st != nil {
		st.watchers.Add(d)
	}
}

// Server serves one listener. Build it with New, run it with Serve.
type Server struct {
	cfg    Config
	log    zerolog.Logger
	ln     net.Listener
	socket string
	uid    int

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	watchers map[*watcher]struct{}
	groups   map[string]*watchGroup // the watchers by request (watch.go)
	refusing int                    // refusals being written (each drains its peer for up to a second)
	refusals refusals               // refusals not yet logged
	requests budget                 // what large requests hold (limits.go)
	active   sync.WaitGroup
	stopping atomic.Bool // set by closeIdle: a connection's wait for a request is stopGrace at most
	// recent keeps what gets made from the same few credentials, so that a get makes none of it
	// again: the API bases checked (checkBase) and the provenance strings of answers.
	recent struct {
		bases   recent.Cache[string, error]
		names   recent.Cache[sources.Provenance, string]
		watches recent.Cache[string, *watchAnswer] // by request (watch.go)
	}
	changes atomic.Uint64 // the watchers woken so far (watcher.wake)
}

// New returns a server for ln.
func New(ln net.Listener, cfg Config) *Server {
	s := &Server{cfg: cfg, log: cfg.Log, ln: ln, socket: ln.Addr().String(), uid: os.Getuid(),
		conns: map[net.Conn]struct{}{}, watchers: map[*watcher]struct{}{}, groups: map[string]*watchGroup{}}
	s.requests.max = mainRequestBudget
	if cfg.Scope != nil {
		s.requests.max = scopedRequestBudget
	}
	return s
}

// Serve accepts connections until ctx ends, then closes the listener, wakes the connections
// waiting for their next request, and waits (up to drain) for the requests in flight, which
// run under work, a context that outlives ctx until the caller cancels it.
func (s *Server) Serve(ctx, work context.Context, drain time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.accept(ctx, work) }()
	wakerDone := make(chan struct{})
	go func() { defer close(wakerDone); s.wakeWatchers(ctx) }()
	defer func() { <-wakerDone }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.ln.Close()
	if err == nil {
		<-errc
	}
	s.closeIdle()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		s.log.Warn().Dur("after", drain).Msg("requests still running; leaving them")
	}
	return err
}

// acceptBackoff spaces accepts after a failure (out of file descriptors, say).
var acceptBackoff = backoff.Policy{Base: 5 * time.Millisecond, Max: time.Second, Jitter: -1}

func (s *Server) accept(ctx, work context.Context) error {
	failures := 0
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and friends: back off instead of spinning.
			failures++
			delay := acceptBackoff.Delay(failures)
			s.log.Error().Err(err).Dur("retry_in", delay).Msg("accept failed")
			time.Sleep(delay)
			continue
		}
		failures = 0
		s.mu.Lock()
		full := len(s.conns) >= s.cfg.MaxConns
		drain := full && s.refusing < maxDraining
		switch {
		case !full:
			s.conns[c] = struct{}{}
		case drain:
			s.refusing++
		}
		s.active.Add(1) // a refusal too, so that Serve does not return before it is written
		s.mu.Unlock()
		if full {
			s.refused("connections", s.cfg.MaxConns)
			answer := fail(ipc.CodeBusy, fmt.Sprintf("this socket already serves %d connections, its limit", s.cfg.MaxConns), "retry in a moment; close connections you no longer use")
			if !drain {
				// A flood: answer without waiting for the peer, so that refusing costs nothing.
				_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				_ = ipc.WriteAnswer(c, answer)
				c.Close()
				s.active.Done()
				continue
			}
			go func() {
				defer func() {
					s.mu.Lock()
					s.refusing--
					s.mu.Unlock()
					s.active.Done()
				}()
				refuse(c, answer)
			}()
			continue
		}
		go s.serveConn(ctx, work, c)
	}
}

// stopGrace is how long a connection may still take to send its request once the daemon stops:
// a client that connected just before the listener closed has its request on the way (or in the
// socket already), and closing the connection under it would reset it.
const stopGrace = 500 * time.Millisecond

// closeIdle ends every connection waiting for a request, once it has waited stopGrace more; a
// request that comes meanwhile, or is being handled, still gets its answer.
func (s *Server) closeIdle() {
	s.stopping.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Now().Add(stopGrace))
	}
}

// serveConn answers the requests of one connection, one after the other. Handlers run under
// work, so that an exchange a request waits for is not cut short by the daemon stopping.
func (s *Server) serveConn(ctx, work context.Context, c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.active.Done()
	}()
	if uid, err := peerUID(c); err != nil || uid != s.uid {
		why := peerRefusal(uid, s.uid)
		s.log.Warn().Int("peer_uid", uid).Err(err).Str("why", why).Msg("refused a connection from another user")
		s.cfg.Stats.countRefused()
		refuse(c, fail(ipc.CodeForbidden, "this daemon serves only its own user: "+why, ""))
		return
	}
	// Between requests the connection holds no buffer: one is taken from a pool when a
	// request's first byte comes, and given back once it is answered.
	cr := &connReader{c: c, budget: &s.requests}
	var r *bufio.Reader
	defer func() {
		cr.done()
		if r != nil {
			giveBack(r)
		}
	}()
	// A connection accepted just before the daemon stopped still has its first request read
	// and answered (within stopGrace); after that, the end of ctx ends the connection.
	for first := true; first || ctx.Err() == nil; first = false {
		req := s.readRequest(c, cr, &r)
		if req == nil {
			return
		}
		if s.cfg.Scope != nil {
			if refusal := s.cfg.Scope.admit(req); refusal != nil {
				if err := ipc.WriteAnswer(c, refusal); err != nil {
					return
				}
				cr.done()
				if giveBack(r) {
					r = nil
				}
				continue
			}
		}
		if req.Value(ipc.KeyAction) == ipc.ActionWatch {
			// The watch reads nothing more but the end of the stream: a byte sent already ends
			// it after its first answer.
			sentMore := !giveBack(r)
			if !sentMore {
				r = nil
			}
			s.serveWatch(ctx, work, c, req, sentMore)
			return
		}
		resp := s.handle(work, req, &cr.room)
		if s.cfg.Scope != nil {
			s.cfg.Scope.redact(resp)
		}
		if err := ipc.WriteAnswer(c, resp); err != nil {
			s.log.Debug().Err(err).Msg("write answer")
			return
		}
		if req.Value(ipc.KeyAction) == ipc.ActionStop && ipc.AsError(resp) == nil {
			s.log.Info().Msg("stop requested by a client")
			s.cfg.Stop()
			return
		}
		cr.done()
		if giveBack(r) {
			r = nil
		}
	}
}

// readRequest waits for the connection's next request (taking a buffer for it into *r when
// *r is nil) and reads it; nil means the connection is done: the peer closed it or stayed idle
// too long, or the request could not be read (and was answered so). The request is read into
// the same message each time (cr.req): nothing keeps a request once it is answered.
func (s *Server) readRequest(c net.Conn, cr *connReader, r **bufio.Reader) *ipc.Message {
	whole := false // the request came whole with the read that ended the wait
	if *r == nil {
		cr.keepDeadline(false, s.cfg.IdleTimeout, time.Now())
		if s.stopping.Load() { // after the keep above: closeIdle may have run before it
			cr.readBy = time.Now().Add(stopGrace)
			_ = c.SetReadDeadline(cr.readBy)
		}
		// Yield before reading: a client that just got its answer has not sent its next request
		// yet, so a read now finds nothing and costs a failed read, a park and a wake-up. Let
		// the other connections' goroutines run first, and the read finds the request there more
		// often (docs/BENCHMARKS.md: reads per request 2.0 -> 1.3 under 64 connections). With
		// nothing else to run, it returns at once.
		runtime.Gosched()
		if err := cr.wait(); err != nil {
			return nil
		}
		whole = bytes.HasPrefix(cr.held, []byte("\n")) || bytes.Contains(cr.held, []byte("\n\n"))
		*r = takeReader(cr)
	}
	// The write deadline bounds handling the request and writing the answer (a get waits at
	// most ipc.GetBudget for an exchange); the rest of the request, if any, must come within
	// RequestTimeout. A request that came whole needs no more reads, so its read deadline
	// stays the idle one: most requests move no deadline at all (see keepDeadline).
	now := time.Now()
	cr.room.now = now
	cr.keepDeadline(true, s.cfg.RequestTimeout+ipc.GetBudget+5*time.Second, now)
	if !whole {
		cr.readBy = now.Add(s.cfg.RequestTimeout)
		_ = c.SetReadDeadline(cr.readBy)
	}
	cr.left = s.maxRequest()
	if err := ipc.ReadMessageInto(*r, &cr.req); err != nil {
		s.badRequest(c, err)
		return nil
	}
	return &cr.req
}

// badRequest answers a request that could not be read, if it began: every request gets an
// answer, even one the stream cannot carry on after.
func (s *Server) badRequest(c net.Conn, err error) {
	var msg string
	switch {
	case errors.Is(err, ipc.ErrTooLarge) || errors.Is(err, ipc.ErrMalformed):
		msg = err.Error()
	case errors.Is(err, errRequestTooLarge):
		msg = fmt.Sprintf("%s: over the %d bytes this socket reads for one", ipc.ErrTooLarge, s.maxRequest())
	case errors.Is(err, errBudget):
		s.refused("request bytes", int(s.requests.max))
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_ = ipc.WriteAnswer(c, fail(ipc.CodeBusy, fmt.Sprintf("this socket already holds %d KiB of large requests, its limit", s.requests.max>>10),
			"retry in a moment; a request under 4 KiB is always read"))
		return
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = "the request ended before its empty line"
	case errors.Is(err, os.ErrDeadlineExceeded):
		msg = fmt.Sprintf("the request was not complete within %s of its first byte", s.cfg.RequestTimeout)
	default:
		return
	}
	s.log.Debug().Err(err).Msg("bad request")
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = ipc.WriteAnswer(c, fail(ipc.CodeBadRequest, msg, "end every request with an empty line; see docs/PROTOCOL.md"))
}

// refuse answers a connection that will not be served with one error, then closes it. It lets
// the peer finish sending first, so that the peer reads the answer rather than a broken pipe;
// what it sends is discarded, bounded by a deadline and a small cap.
func refuse(c net.Conn, answer *ipc.Message) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	_ = ipc.WriteAnswer(c, answer)
	if uc, ok := c.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
		_, _ = io.CopyN(io.Discard, c, ipc.MaxMessageSize)
	}
}
