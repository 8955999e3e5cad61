package proxy

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// The bridge's shutdown against a client that stopped reading its stdout, and against a
// server that holds every request slot. The waits here bound a failure (a bridge that never
// ends); none of them is a claim about speed.

// stuckOut takes its first n writes, then blocks until the test ends: an MCP client that no
// longer reads the bridge's stdout. stuck is closed when a write first blocks.
type stuckOut struct {
	mu      sync.Mutex
	n       int
	stuck   chan struct{}
	release chan struct{}
	once    sync.Once
}

func newStuckOut(t *testing.T, n int) *stuckOut {
	w := &stuckOut{n: n, stuck: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { close(w.release) })
	return w
}

func (w *stuckOut) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.n > 0 {
		w.n--
		w.mu.Unlock()
		return len(p), nil
	}
	w.mu.Unlock()
	w.once.Do(func() { close(w.stuck) })
	<-w.release
	return 0, io.ErrClosedPipe
}

// With a stream pouring notifications and a client that no longer reads stdout, the end of
// stdin and a signal each still end the bridge, which says that stdout was not read.
func TestBridgeEndsWhileStdoutIsNotRead(t *testing.T) {
	for _, how := range []string{"stdin EOF", "signal"} {
		t.Run(how, func(t *testing.T) {
			e := newTestEnv(t)
			srv := hostileMCP(t, "stream", true, nil)
			out := newStuckOut(t, 1) // the initialize answer, then nothing
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			inR, inW := io.Pipe()
			defer inW.Close()
			done := make(chan error, 1)
			go func() {
				done <- Bridge(ctx, BridgeConfig{URL: srv.URL, Tokens: e.tokens, In: inR, Out: out})
			}()
			fmt.Fprintln(inW, initLine)
			fmt.Fprintln(inW, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}`)
			<-out.stuck
			if how == "signal" {
				cancel()
			} else {
				inW.Close()
			}
			var err error
			start := time.Now()
			select {
			case err = <-done:
				t.Logf("ended %s after %s", time.Since(start).Round(time.Millisecond), how)
			case <-ctxTimeout(t):
				t.Fatalf("the bridge did not end after %s with stdout not read", how)
			}
			if err == nil || !strings.Contains(err.Error(), "stdout") {
				t.Errorf("Bridge returned %v, want an error saying stdout was not read", err)
			}
		})
	}
}

// With every request slot held by a server that streams for ever, the end of stdin still ends
// the bridge, even with one more request waiting for a slot.
func TestBridgeEndsAtEOFWithEverySlotHeld(t *testing.T) {
	e := newTestEnv(t)
	held := make(chan struct{}, maxInFlight)
	srv := hostileMCP(t, "stream", true, held)
	out := &syncBuf{}
	inR, inW := io.Pipe()
	defer inW.Close()
	done := make(chan error, 1)
	go func() {
		done <- Bridge(context.Background(), BridgeConfig{URL: srv.URL, Tokens: e.tokens, In: inR, Out: out})
	}()
	fmt.Fprintln(inW, initLine)
	for i := range maxInFlight {
		fmt.Fprintf(inW, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"x"}}`+"\n", 100+i)
	}
	for range maxInFlight {
		select {
		case <-held:
		case <-ctxTimeout(t):
			t.Fatalf("the server never held every slot")
		}
	}
	fmt.Fprintln(inW, `{"jsonrpc":"2.0","id":"last","method":"tools/call","params":{"name":"x"}}`)
	inW.Close()
	start := time.Now()
	select {
	case err := <-done:
		t.Logf("ended %s after the end of stdin", time.Since(start).Round(time.Millisecond))
		if err != nil {
			t.Errorf("Bridge: %v", err)
		}
	case <-ctxTimeout(t):
		t.Fatalf("the bridge did not end at the end of stdin with every slot held")
	}
	if !strings.Contains(out.String(), `"id":"last","error"`) {
		t.Errorf("the request left without a slot got no JSON-RPC error: %s", lastLines(out.String(), 3))
	}
}

// ctxTimeout is a channel closed after 10 × ShutdownBound: only a bridge that does not end
// waits that long.
func ctxTimeout(t *testing.T) <-chan struct{} {
	ctx, cancel := context.WithTimeout(context.Background(), 10*ShutdownBound)
	t.Cleanup(cancel)
	return ctx.Done()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
