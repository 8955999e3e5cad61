package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// hostileMCP is an MCP server that answers initialize, then behaves as mode says for every
// other request: "hang" never answers, "stream" sends events for ever, as fast as they are
// read, "huge" answers a JSON body of 200 MiB made on the fly; a request whose method is "ok" is
// answered at once. held, when not nil, receives (without blocking) once per request it holds.
func hostileMCP(t *testing.T, mode string, initialize bool, held chan<- struct{}) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		_ = json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m)
		if (m.Method == "initialize" && initialize) || m.Method == "ok" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18"}}`, m.ID)
			return
		}
		if held != nil {
			select {
			case held <- struct{}{}:
			default:
			}
		}
		switch mode {
		case "stream":
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			for i := 0; ; i++ {
				select {
				case <-r.Context().Done():
					return
				case <-release:
					return
				default:
				}
				if _, err := fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":%d}}\n\n", i); err != nil {
					return
				}
				if rc.Flush() != nil {
					return
				}
			}
		case "huge":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"blob":"`, m.ID)
			chunk := strings.Repeat("x", 64<<10)
			for i := 0; i < 200<<20/len(chunk) && r.Context().Err() == nil; i++ {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
			fmt.Fprint(w, `"}}`)
		default: // hang
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}
	}))
	t.Cleanup(func() {
		close(release)
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

const initLine = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// runBridge starts a bridge on srv with a pipe for stdin; it returns the pipe's writer, the
// output, and a channel that receives Bridge's error when it returns.
func runBridge(t *testing.T, ctx context.Context, srv *httptest.Server) (*io.PipeWriter, *syncBuf, chan error) {
	t.Helper()
	e := newTestEnv(t)
	inR, inW := io.Pipe()
	out := &syncBuf{}
	done := make(chan error, 1)
	go func() {
		done <- Bridge(ctx, BridgeConfig{URL: srv.URL, Tokens: e.tokens, In: inR, Out: out})
	}()
	t.Cleanup(func() { inW.Close() })
	return inW, out, done
}

// ended waits for the bridge to return. The bridge's own bound is ShutdownBound; this waits
// longer so a loaded machine does not fail the test, but a bridge that ignores the end waits
// for ever and fails it.
func ended(t *testing.T, done chan error, what string) {
	t.Helper()
	start := time.Now()
	select {
	case <-done:
		t.Logf("%s: ended after %s", what, time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * ShutdownBound):
		t.Fatalf("%s: the bridge did not end", what)
	}
}

// The end of stdin ends the bridge whatever the server does: an initialize never answered, a
// call whose answer streams for ever.
func TestBridgeEndsAtEOFWhateverTheServerDoes(t *testing.T) {
	t.Run("initialize never answered", func(t *testing.T) {
		in, _, done := runBridge(t, context.Background(), hostileMCP(t, "hang", false, nil))
		fmt.Fprintln(in, initLine)
		in.Close()
		ended(t, done, "EOF during initialize")
	})
	t.Run("endless stream", func(t *testing.T) {
		in, _, done := runBridge(t, context.Background(), hostileMCP(t, "stream", true, nil))
		fmt.Fprintln(in, initLine)
		fmt.Fprintln(in, `{"jsonrpc":"2.0","id":2,"method":"tools/call"}`)
		in.Close()
		ended(t, done, "EOF during an endless stream")
	})
}

// A signal (the context) ends the bridge at once, with stdin still open and initialize unanswered.
func TestBridgeEndsAtASignal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	in, _, done := runBridge(t, ctx, hostileMCP(t, "hang", false, nil))
	fmt.Fprintln(in, initLine)
	time.Sleep(50 * time.Millisecond) // let the initialize be on its way; the result does not depend on it
	cancel()
	ended(t, done, "signal during initialize")
}

// An answer over the message limit is not buffered whole: the client gets a JSON-RPC error for
// that request's id naming the limit, and the next request is still carried.
func TestBridgeRefusesAnswersOverTheLimit(t *testing.T) {
	in, out, done := runBridge(t, context.Background(), hostileMCP(t, "huge", true, nil))
	fmt.Fprintln(in, initLine)
	fmt.Fprintln(in, `{"jsonrpc":"2.0","id":2,"method":"tools/call"}`)
	waitOut(t, out, `"id":2,"error"`)
	fmt.Fprintln(in, `{"jsonrpc":"2.0","id":3,"method":"ok"}`)
	waitOut(t, out, `"id":3,"result"`)
	in.Close()
	ended(t, done, "after the huge answer")
	if !strings.Contains(out.String(), fmt.Sprintf("over the %d-byte limit", DefaultMaxMessage)) {
		t.Errorf("the error does not name the limit: %s", out.String())
	}
}

// A line on stdin over the limit gets a JSON-RPC error with id null and is not sent; the next
// line is.
func TestBridgeRefusesStdinLinesOverTheLimit(t *testing.T) {
	in, out, done := runBridge(t, context.Background(), hostileMCP(t, "hang", true, nil))
	fmt.Fprintln(in, initLine)
	waitOut(t, out, `"id":1,"result"`)
	go func() {
		fmt.Fprintf(in, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"x":"%s"}}`+"\n", strings.Repeat("y", DefaultMaxMessage+10))
		fmt.Fprintln(in, `{"jsonrpc":"2.0","id":3,"method":"ok"}`)
	}()
	waitOut(t, out, `"id":null,"error"`)
	waitOut(t, out, `"id":3,"result"`)
	in.Close()
	ended(t, done, "after the long line")
	if strings.Contains(out.String(), `"id":2`) {
		t.Errorf("the long line was answered as if sent: %s", out.String())
	}
}

// waitOut waits until the bridge's output holds want.
func waitOut(t *testing.T, out *syncBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the output never held %s: %s", want, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
