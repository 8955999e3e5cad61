package daemon_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/ipc"
)

// largeRequest is a get of about size bytes, ended (a request to answer) or not (one on its
// way, which the daemon holds until its request timeout).
func largeRequest(size int, ended bool) string {
	var b strings.Builder
	b.WriteString("version=2\naction=get\n")
	for b.Len() < size-20 {
		b.WriteString("pad=" + strings.Repeat("x", min(8000, size-20-b.Len())) + "\n")
	}
	if ended {
		b.WriteString("\n")
	}
	return b.String()
}

// A socket holds a bounded amount of large requests at once (docs/OPERATIONS.md: 8 MiB on the
// daemon's own socket, 256 KiB on each scoped one, counting what a request holds past its first
// 4 KiB): connections each holding a large unfinished request are answered busy past it, as a
// full connection cap is, while small requests go on being answered; the budget comes back when
// they leave.
func TestLargeRequestsInFlightAreBounded(t *testing.T) {
	td, scoped := scopedDaemon(t, func(c *daemon.Config) { c.RequestTimeout = time.Hour })
	for _, tc := range []struct {
		name   string
		socket string
		n      int // connections, under the socket's cap
		size   int // each one's request
		budget int
	}{
		{"the daemon's socket", td.Socket, 300, 60 << 10, 8 << 20},
		{"a scoped socket", scoped.Socket, 60, 15 << 10, 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			partial := largeRequest(tc.size, false)
			var busy, other atomic.Int32
			for range tc.n {
				c, err := net.Dial("unix", tc.socket)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				go func() {
					_, _ = io.WriteString(c, partial) // cut short by a refusal
				}()
				go func() {
					m, err := ipc.ReadAnswer(bufio.NewReader(c))
					switch {
					case err == nil && ipc.ErrorCode(ipc.AsError(m)) == ipc.CodeBusy:
						busy.Add(1)
					case err == nil:
						other.Add(1) // anything else: checked below
					}
				}()
			}
			// Each held request takes its size less 4 KiB from the budget, so at most held of
			// them are held and every other one is answered busy. (Fewer may be held: a request
			// refused half-read gives back what it held when no other is left to take it, so a
			// large get sent now may fit; the bound is on what is held, not on that moment.)
			held := tc.budget / (tc.size - 4<<10)
			testkit.WaitFor(t, 30*time.Second, "the requests past the budget answered busy", func() bool {
				return busy.Load() >= int32(tc.n-held)
			})
			// Small requests are answered meanwhile.
			sd := rawSocket(tc.socket)
			if tok, err := ipc.ParseToken(mustDo(t, sd, "")); err != nil || tok.Token != "key-a" {
				t.Fatalf("a small get with the budget held: %v %v", tok, err)
			}
			if n := other.Load(); n > 0 {
				t.Fatalf("%d unfinished requests were answered other than busy", n)
			}
			t.Logf("%d of %d unfinished %d-byte requests answered busy", busy.Load(), tc.n, tc.size)
		})
	}
	// The held connections close at the end of each subtest; then large requests fit again.
	for _, socket := range []string{td.Socket, scoped.Socket} {
		size := 60 << 10
		if socket == scoped.Socket {
			size = 15 << 10
		}
		testkit.WaitFor(t, 30*time.Second, "a large get once the held requests left", func() bool {
			m, err := rawSocket(socket).raw(t, largeRequest(size, true))
			return err == nil && m.Value(ipc.KeyToken) == "key-a"
		})
	}
}

// rawSocket is a socket to send raw requests to.
type rawSocket string

// raw sends req on a new connection and reads one answer (its error, for an error answer).
func (s rawSocket) raw(t *testing.T, req string) (*ipc.Message, error) {
	t.Helper()
	c, err := net.Dial("unix", string(s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() { _, _ = io.WriteString(c, req) }()
	m, err := ipc.ReadAnswer(bufio.NewReader(c))
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return m, ipc.AsError(m)
}

// mustDo sends a small get (for workspace ws, when not empty) and fails on an error answer.
func mustDo(t *testing.T, s rawSocket, ws string) *ipc.Message {
	t.Helper()
	req := "version=2\naction=get\n"
	if ws != "" {
		req += "workspace=" + ws + "\n"
	}
	m, err := s.raw(t, req+"\n")
	if err != nil {
		t.Fatalf("a small get: %v", err)
	}
	return m
}
