//go:build reliability

package reliability

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// The unit's memory limit (systemd/blauthd.service: MemoryMax=128M).
const unitMemoryMax = 128 << 20

// scopedConn is one connection a hostile peer holds on the scoped socket.
type scopedConn struct {
	c net.Conn
	r *bufio.Reader
}

// openScoped dials socket and sends raw. When answer is set it reads one answer (within 10 s).
func openScoped(socket, raw string, answer bool) (*scopedConn, *ipc.Message, error) {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	sc := &scopedConn{c: c, r: bufio.NewReader(c)}
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, werr := io.WriteString(c, raw)
	if !answer {
		return sc, nil, werr
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := ipc.ReadAnswer(sc.r)
	_ = c.SetDeadline(time.Time{})
	if err != nil {
		c.Close()
		if werr != nil {
			err = werr
		}
		return nil, nil, err
	}
	return sc, m, nil
}

// partialRequest is a request on its way: 15 KiB of it, the most a scoped socket reads for one,
// without its end.
func partialRequest() string {
	line := "pad=" + strings.Repeat("x", 5000) + "\n"
	return "version=2\naction=get\n" + strings.Repeat(line, 3)
}

// TestReliabilityScopedSocketFloodInMemoryLimit: the real blauthd in a 128 MiB memory cgroup
// (as its unit runs it) and a peer on its scoped socket that opens watchers until refused,
// then connections until refused, then floods it with connections carrying the largest request
// it may send, three times over. The daemon lives, stays under the limit, and its own socket
// keeps answering.
func TestReliabilityScopedSocketFloodInMemoryLimit(t *testing.T) {
	lim := confineMemory(t, unitMemoryMax)
	t.Logf("memory limit: %s", lim.how)
	const ws = "mem-ws"
	api := newFakeAPI(t, time.Hour)
	cc := api.addClient("sa-"+ws, "secret-"+ws+"-"+randHex(12))
	scoped := filepath.Join(shortDir(t), "fwd", "scoped.sock")
	d := startDaemon(t, daemonOpts{api: api, prefix: lim.prefix(), args: []string{"--scoped-socket", scoped + "=" + ws},
		env: []string{"BL_WORKSPACE=" + ws, "BL_CLIENT_CREDENTIALS=" + cc}})
	lim.applyAfterStart(t, d.pid)
	d.mustServe(t, api, ws, time.Minute, "")
	t.Logf("FIGURE memlimit: daemon at start: VmRSS %d KiB", procStatusKiB(d.pid, "VmRSS"))
	before, err := readProc(d.pid)
	if err != nil {
		t.Fatal(err)
	}

	// alive fails the test if the daemon died; after a failed call (its cause, maybe), it
	// first gives a daemon just killed a second to be reaped.
	alive := func(doing string, failed bool) {
		t.Helper()
		if failed {
			_, _ = d.waitExit(time.Second)
		}
		if d.exited() {
			_, ooms := lim.peakAndOOM()
			t.Fatalf("blauthd died while %s: %v (OOM kills in its group: %d)", doing, d.exitErr, ooms)
		}
	}
	var held []*scopedConn
	closeHeld := func() {
		for _, c := range held {
			c.c.Close()
		}
		held = nil
	}
	defer closeHeld()
	watchReq := "version=2\naction=watch\n\n"
	pingReq := "version=2\naction=ping\n\n"
	for round := 1; round <= 3; round++ {
		// Watchers until one is refused.
		watchers := 0
		for ; ; watchers++ {
			if watchers > 10000 {
				t.Fatalf("round %d: the scoped socket took over 10000 watchers", round)
			}
			c, m, err := openScoped(scoped, watchReq, true)
			if err != nil {
				alive(fmt.Sprintf("opening watcher %d", watchers+1), true)
				t.Fatalf("round %d, watcher %d: %v", round, watchers+1, err)
			}
			if ipc.ErrorCode(ipc.AsError(m)) == ipc.CodeBusy {
				c.c.Close()
				break
			}
			if _, err := ipc.ParseToken(m); err != nil {
				t.Fatalf("round %d, watcher %d: %v", round, watchers+1, err)
			}
			held = append(held, c)
		}
		if watchers != 32 {
			t.Fatalf("round %d: the scoped socket took %d watchers, want its default cap of 32", round, watchers)
		}
		// Idle connections (each answered a ping) until one is refused.
		idle := 0
		for ; ; idle++ {
			if idle > 10000 {
				t.Fatalf("round %d: the scoped socket took over 10000 connections", round)
			}
			c, m, err := openScoped(scoped, pingReq, true)
			if err != nil {
				alive("opening connections", true)
				t.Fatalf("round %d, connection %d: %v", round, idle+1, err)
			}
			if ipc.ErrorCode(ipc.AsError(m)) == ipc.CodeBusy {
				c.c.Close()
				break
			}
			held = append(held, c)
		}
		// The refused watcher's connection may still be counted for an instant.
		if n := watchers + idle; n > 64 || n < 63 {
			t.Fatalf("round %d: the scoped socket held %d connections (%d watchers), want its default cap of 64", round, n, watchers)
		}
		// A flood beyond the cap, each carrying the largest request a scoped socket reads.
		answers := flood(t, scoped, 2000, partialRequest())
		t.Logf("round %d: %d watchers, %d idle connections; the flood beyond: %v", round, watchers, idle, answers)
		alive("refusing the flood", false)
		// Swap the idle connections for requests in flight, the costliest state.
		for _, c := range held[watchers:] {
			c.c.Close()
		}
		held = held[:watchers]
		for range idle {
			if c, _, err := openScoped(scoped, partialRequest(), false); err == nil {
				held = append(held, c)
			}
		}
		// The daemon's own socket still serves, a get and a watch.
		d.mustServe(t, api, ws, time.Minute, "")
		if c, m, err := openScoped(d.socket, watchReq, true); err != nil {
			t.Fatalf("round %d: a watch on the main socket: %v", round, err)
		} else if _, err := ipc.ParseToken(m); err != nil {
			t.Fatalf("round %d: a watch on the main socket: %v", round, err)
		} else {
			held = append(held, c)
		}
		rss, hwm := procStatusKiB(d.pid, "VmRSS"), procStatusKiB(d.pid, "VmHWM")
		t.Logf("FIGURE memlimit: round %d, scoped socket full: VmRSS %d KiB, VmHWM %d KiB (limit %d KiB)", round, rss, hwm, unitMemoryMax>>10)
		if hwm<<10 >= unitMemoryMax {
			t.Fatalf("round %d: the daemon's peak RSS %d KiB reached the limit", round, hwm)
		}
		alive("full", false)
		closeHeld()
		// The next round starts once the daemon let every connection go (it holds one fd each).
		if !waitFor(30*time.Second, 20*time.Millisecond, func() bool {
			s, err := readProc(d.pid)
			return err == nil && s.FDs <= before.FDs+2
		}) {
			s, _ := readProc(d.pid)
			t.Fatalf("round %d: the daemon still holds %d fds (%d before) after the peer closed everything", round, s.FDs, before.FDs)
		}
	}
	peak, ooms := lim.peakAndOOM()
	t.Logf("FIGURE memlimit: cgroup peak usage %d bytes, OOM kills %d (-1: no cgroup)", peak, ooms)
	if ooms > 0 || peak >= unitMemoryMax {
		t.Fatalf("the group reached its limit: peak %d, OOM kills %d", peak, ooms)
	}
	d.mustServe(t, api, ws, time.Minute, "")
	d.stop()
}

// flood opens n connections to socket from 16 goroutines, each sending raw, and counts how each
// ended: a busy answer, the daemon closing without one, or anything else (which fails the test:
// nothing past the cap may be served).
func flood(t *testing.T, socket string, n int, raw string) map[string]int {
	t.Helper()
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				outcome := floodOne(socket, raw)
				mu.Lock()
				got[outcome]++
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for k := range got {
		if k != "busy" && k != "closed" && k != "cut at the request timeout" {
			t.Errorf("a connection past the scoped socket's cap: %s", k)
		}
	}
	return got
}

func floodOne(socket, raw string) string {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	_, _ = io.WriteString(c, raw)
	m, err := ipc.ReadAnswer(bufio.NewReader(c))
	switch {
	case err == nil && ipc.ErrorCode(ipc.AsError(m)) == ipc.CodeBusy:
		return "busy"
	case err == nil && ipc.ErrorCode(ipc.AsError(m)) == ipc.CodeBadRequest:
		// A slot freed for an instant (a refused connection not yet forgotten) took it, and
		// the daemon cut the unfinished request at its timeout.
		return "cut at the request timeout"
	case err == nil:
		return fmt.Sprintf("answered %v", m.Fields)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "closed"
	}
	return "error: " + err.Error()
}
