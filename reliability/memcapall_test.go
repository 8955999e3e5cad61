//go:build reliability

package reliability

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// capSocket is one socket of the daemon, filled to its caps (the defaults, docs/OPERATIONS.md).
type capSocket struct {
	path            string
	conns, watchers int
	// budget is its request budget; largeSize the largest request it reads.
	budget, largeSize int
}

// blConfigKey is a bl config holding one API key for ws.
func blConfigKey(ws, key string) string {
	return "context:\n  workspace: " + ws + "\nworkspaces:\n- name: " + ws + "\n  credentials:\n    apiKey: \"" + key + "\"\ntracking: false\n"
}

// TestReliabilityEveryCapFullInMemoryLimit: the real blauthd in a 128 MiB memory cgroup, with
// its own socket and the 16 scoped sockets it may serve, each filled to every cap at once:
// watchers up to the watcher cap, then connections up to the connection cap; then every one of
// those connections sends the largest unfinished request its socket reads (those past the
// request budget are refused busy, and their room taken again by connections with an unfinished
// request just under the 4 KiB a request holds outside the budget); then a credential change
// makes every watcher compute and send a new answer. The daemon lives, and its group never
// reaches the limit: the figures docs/OPERATIONS.md adds up.
func TestReliabilityEveryCapFullInMemoryLimit(t *testing.T) {
	lim := confineMemory(t, unitMemoryMax)
	t.Logf("memory limit: %s", lim.how)
	const ws = "mem-all"
	base := shortDir(t)
	home := filepath.Join(base, "home")
	blPath := filepath.Join(home, ".blaxel", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(blPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blPath, []byte(blConfigKey(ws, "key-one")), 0o600); err != nil {
		t.Fatal(err)
	}
	sockets := []capSocket{{path: filepath.Join(base, "run", "blauthd.sock"), conns: 2048, watchers: 1024, budget: 8 << 20, largeSize: 60 << 10}}
	args := []string{"--log-level", "info"}
	for i := range 16 {
		p := filepath.Join(base, fmt.Sprintf("fwd%d", i), "s.sock")
		sockets = append(sockets, capSocket{path: p, conns: 64, watchers: 32, budget: 256 << 10, largeSize: 15 << 10})
		args = append(args, "--scoped-socket", p+"="+ws)
	}
	d := startDaemon(t, daemonOpts{home: home, socket: sockets[0].path, prefix: lim.prefix(), args: args})
	lim.applyAfterStart(t, d.pid)
	before, err := readProc(d.pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE memlimit-all: daemon at start: %v", before)

	var held []*scopedConn
	defer func() {
		for _, c := range held {
			c.c.Close()
		}
	}()
	fail := func(format string, a ...any) {
		t.Helper()
		if _, err := d.waitExit(time.Second); err == nil {
			_, ooms := lim.peakAndOOM()
			t.Fatalf("blauthd died (OOM kills in its group: %d): %s", ooms, fmt.Sprintf(format, a...))
		}
		t.Fatalf(format, a...)
	}
	// open dials socket and reads the answer to req, which must be a token (want "") or an
	// error of code want.
	open := func(socket, req, want string) *scopedConn {
		t.Helper()
		c, m, err := openScoped(socket, req, true)
		if err != nil {
			fail("%s: %v", socket, err)
		}
		if code := ipc.ErrorCode(ipc.AsError(m)); code != want {
			c.c.Close()
			fail("%s: answered %v, want code %q", socket, m.Fields, want)
		}
		return c
	}
	watchReq, pingReq := "version=2\naction=watch\n\n", "version=2\naction=ping\n\n"
	var watchers, idle [][]*scopedConn
	for _, s := range sockets {
		var w, i []*scopedConn
		for range s.watchers {
			w = append(w, open(s.path, watchReq, ""))
		}
		for range s.conns - s.watchers {
			i = append(i, open(s.path, pingReq, ""))
		}
		open(s.path, pingReq, ipc.CodeBusy).c.Close()
		watchers, idle = append(watchers, w), append(idle, i)
		held = append(append(held, w...), i...)
	}
	full, _ := readProc(d.pid)
	t.Logf("FIGURE memlimit-all: every socket at its watcher and connection caps (%d connections): %v", len(held), full)

	// Every idle connection now sends the largest unfinished request its socket reads, all at
	// once: past its request budget each is answered busy and closed, and the room it leaves is
	// taken again by a connection with an unfinished request just under the 4 KiB a request
	// holds outside the budget.
	pad := func(size int) string {
		return "version=2\naction=get\n" + strings.Repeat("pad="+strings.Repeat("x", 999)+"\n", (size-40)/1004)
	}
	busy := make([]atomic.Int32, len(sockets))
	for k, s := range sockets {
		large := pad(s.largeSize)
		for _, c := range idle[k] {
			go func() {
				_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.WriteString(c.c, large) // cut short by a refusal
			}()
			go func() {
				// The answer of one held comes at its request timeout, or never.
				if m, err := ipc.ReadAnswer(c.r); err == nil && ipc.ErrorCode(ipc.AsError(m)) == ipc.CodeBusy {
					busy[k].Add(1)
				}
			}()
		}
	}
	small := pad(4000)
	for k, s := range sockets {
		// At most this many fit (each holding at least what it sent past its free 4 KiB).
		fit := s.budget / (s.largeSize - 4<<10)
		if !waitFor(30*time.Second, 10*time.Millisecond, func() bool { return int(busy[k].Load()) >= len(idle[k])-fit }) {
			fail("%s: %d of %d unfinished %d-byte requests answered busy, want all but the %d its budget holds", s.path, busy[k].Load(), len(idle[k]), s.largeSize, fit)
		}
		refills := 0
		for {
			c, m, err := openScoped(s.path, pingReq, true)
			if err != nil {
				fail("%s: %v", s.path, err)
			}
			if ipc.ErrorCode(ipc.AsError(m)) == ipc.CodeBusy {
				c.c.Close()
				break
			}
			if refills++; refills > int(busy[k].Load()) {
				c.c.Close()
				fail("%s: more connections than its cap of %d", s.path, s.conns)
			}
			held = append(held, c)
			_ = c.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.WriteString(c.c, small); err != nil {
				fail("%s: %v", s.path, err)
			}
		}
		t.Logf("%s: %d large requests held, %d refused and replaced by small ones", filepath.Base(filepath.Dir(s.path)), len(idle[k])-int(busy[k].Load()), refills)
	}
	inFlight, _ := readProc(d.pid)
	t.Logf("FIGURE memlimit-all: and every socket's request budget full, every other connection in a request: %v, VmHWM %d KiB", inFlight, procStatusKiB(d.pid, "VmHWM"))

	// A new credential: every watcher of every socket computes and sends its new answer.
	tmp := blPath + ".new"
	if err := os.WriteFile(tmp, []byte(blConfigKey(ws, "key-two")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, blPath); err != nil {
		t.Fatal(err)
	}
	for k, w := range watchers {
		for _, c := range w {
			_ = c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
			for {
				m, err := ipc.ReadAnswer(c.r)
				if err != nil {
					fail("a watcher of %s: %v", sockets[k].path, err)
				}
				if m.Value(ipc.KeyToken) == "key-two" {
					break
				}
			}
		}
	}
	woken, _ := readProc(d.pid)
	hwm := procStatusKiB(d.pid, "VmHWM")
	t.Logf("FIGURE memlimit-all: every watcher had the new key: %v, VmHWM %d KiB (limit %d KiB)", woken, hwm, unitMemoryMax>>10)
	// The daemon's socket is full: one of its watchers leaves, and a get takes its place.
	watchers[0][0].c.Close()
	if !waitFor(30*time.Second, 10*time.Millisecond, func() bool {
		tok, err := d.get(ipc.KeyWorkspace, ws)
		return err == nil && tok.Token == "key-two"
	}) {
		fail("no get answered on the daemon's socket once one of its connections left")
	}
	peak, ooms := lim.peakAndOOM()
	t.Logf("FIGURE memlimit-all: cgroup peak usage %d KiB, OOM kills %d (-1: no cgroup)", peak>>10, ooms)
	if d.exited() || ooms > 0 || peak >= unitMemoryMax || hwm<<10 >= unitMemoryMax {
		t.Fatalf("the daemon reached its limit: peak %d, VmHWM %d KiB, OOM kills %d, exited %v", peak, hwm, ooms, d.exited())
	}
	for _, c := range held {
		c.c.Close()
	}
	held = nil
	if !waitFor(30*time.Second, 20*time.Millisecond, func() bool {
		s, err := readProc(d.pid)
		return err == nil && s.FDs <= before.FDs+2
	}) {
		s, _ := readProc(d.pid)
		t.Fatalf("the daemon still holds %d fds (%d before) after every peer left", s.FDs, before.FDs)
	}
	d.stop()
}
