package proxy

import (
	"container/list"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blauth/blauth/ipc"
)

// gate holds the connections of a listener that have not yet shown the secret, at most max at
// once: accepting one more closes the oldest of them. A connection leaves the gate when a
// request on it carries the secret, or when it closes. Evicting the oldest rather than refusing
// the newest keeps the child's new connections coming in (they show the secret at once) while a
// process without the secret holds connections open.
type gate struct {
	max     int
	evicted func() // called for each connection closed to make room

	mu      sync.Mutex
	waiting list.List // of *gatedConn, oldest first
}

// gateListener passes every accepted connection through its gate.
type gateListener struct {
	net.Listener
	g *gate
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err // unchanged: http.Server retries a temporary one
	}
	gc := &gatedConn{Conn: c, g: l.g}
	var oldest *gatedConn
	l.g.mu.Lock()
	if l.g.max > 0 && l.g.waiting.Len() >= l.g.max {
		oldest = l.g.waiting.Remove(l.g.waiting.Front()).(*gatedConn)
		oldest.elem = nil
	}
	gc.elem = l.g.waiting.PushBack(gc)
	l.g.mu.Unlock()
	if oldest != nil {
		_ = oldest.Conn.Close() // its server goroutine sees the error and ends
		l.g.evicted()
	}
	return gc, nil
}

// gatedConn is a connection in (or once in) a gate.
type gatedConn struct {
	net.Conn
	g     *gate
	elem  *list.Element // guarded by g.mu; nil once out of the gate
	shown atomic.Bool
}

// showed records that a request on c carried the secret: c no longer counts against the gate.
func (c *gatedConn) showed() {
	if !c.shown.Swap(true) {
		c.leave()
	}
}

func (c *gatedConn) leave() {
	c.g.mu.Lock()
	if c.elem != nil {
		c.g.waiting.Remove(c.elem)
		c.elem = nil
	}
	c.g.mu.Unlock()
}

func (c *gatedConn) Close() error {
	c.leave()
	return c.Conn.Close()
}

// CloseWrite lets http.Server half-close the connection after an error answer (431), so that
// the client reads the answer before the connection goes.
func (c *gatedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type connKey struct{}

// withConn is http.Server.ConnContext: it puts the connection where ServeHTTP finds it.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// connOf is the gated connection a request came on, or nil (ServeHTTP without Serve).
func connOf(ctx context.Context) *gatedConn {
	c, _ := ctx.Value(connKey{}).(*gatedConn)
	return c
}

// What the summary counts.
type refusal int

const (
	noSecret       refusal = iota // a request without the secret, answered 401
	tooManyHeaders                // a request with more than maxHeaderCount header lines, answered 431
	badTarget                     // a request whose target is not forwarded, answered 400 or 404
	closedWaiting                 // a connection closed to make room, before it showed the secret
	serverError                   // a line of http.Server's error log
	nRefusals
)

// tally counts refusals and writes them as one line at the end of each period that saw any:
// at most one line per period, whatever a peer does. Safe for concurrent use.
type tally struct {
	logf func(format string, a ...any)
	lim  *limits // its period and the gate's size, read when a window opens

	mu     sync.Mutex
	n      [nRefusals]int
	last   [nRefusals]string // the last example, where one helps
	timer  *time.Timer
	period time.Duration // of the window open, to say in the line
	max    int
}

// add counts one refusal of kind k, with an example fit for the log ("" for none).
func (t *tally) add(k refusal, example string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n[k]++
	if example != "" {
		t.last[k] = example
	}
	if t.timer == nil {
		t.period, t.max = t.lim.summaryEvery, t.lim.maxWaiting
		t.timer = time.AfterFunc(t.period, t.flush)
	}
}

// flush writes the line of the window open, if any, and closes the window.
func (t *tally) flush() {
	t.mu.Lock()
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	line := t.line()
	t.n, t.last = [nRefusals]int{}, [nRefusals]string{}
	t.mu.Unlock()
	if line != "" {
		t.logf("%s", line)
	}
}

func (t *tally) line() string {
	var parts []string
	requests := t.n[noSecret] + t.n[tooManyHeaders] + t.n[badTarget]
	if requests > 0 {
		var why []string
		if n := t.n[noSecret]; n > 0 {
			why = append(why, strconv.Itoa(n)+" without the secret")
		}
		if n := t.n[tooManyHeaders]; n > 0 {
			why = append(why, strconv.Itoa(n)+" with more than "+strconv.Itoa(maxHeaderCount)+" header lines")
		}
		if n := t.n[badTarget]; n > 0 {
			why = append(why, strconv.Itoa(n)+" whose path is not forwarded, last: "+ipc.Clip(t.last[badTarget], 200))
		}
		parts = append(parts, "refused "+plural(requests, "request")+" ("+strings.Join(why, ", ")+")")
	}
	if n := t.n[closedWaiting]; n > 0 {
		parts = append(parts, "closed "+plural(n, "connection")+" that had not shown the secret (at most "+strconv.Itoa(t.max)+" such are held)")
	}
	if n := t.n[serverError]; n > 0 {
		parts = append(parts, plural(n, "error")+" of the HTTP server (last: "+ipc.Clip(t.last[serverError], 200)+")")
	}
	if len(parts) == 0 {
		return ""
	}
	return "in the last " + t.period.String() + ": " + strings.Join(parts, "; ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
