package ipc

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// patience bounds every wait of these tests for an event: far past anything a loaded machine
// takes, so that it only ever ends a test that is broken.
const patience = 30 * time.Second

// scripted is a daemon on a real Unix socket that answers each watch with the script its
// test gives for that connection: the messages to send, then whether to close the connection.
type scripted struct {
	ln       net.Listener
	requests chan *Message // every request read, in order
	conns    chan net.Conn // every connection accepted, for the script to play on
}

func listen(t *testing.T, socket string) *scripted {
	t.Helper()
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	d := &scripted{ln: ln, requests: make(chan *Message, 100), conns: make(chan net.Conn, 100)}
	var mu sync.Mutex
	var all []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range all {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			all = append(all, c)
			mu.Unlock()
			m, err := ReadMessage(bufio.NewReader(c))
			if err != nil {
				c.Close()
				continue
			}
			d.requests <- m
			d.conns <- c
		}
	}()
	return d
}

// next waits for the next connection and its request.
func (d *scripted) next(t *testing.T) (net.Conn, *Message) {
	t.Helper()
	select {
	case c := <-d.conns:
		return c, <-d.requests
	case <-time.After(patience):
		t.Fatal("the follower did not connect")
	}
	return nil, nil
}

func send(t *testing.T, c net.Conn, kv ...string) {
	t.Helper()
	if err := WriteAnswer(c, NewMessage(append([]string{KeyVersion, Version}, kv...)...)); err != nil {
		t.Fatal(err)
	}
}

func tokenAnswer(tok string) []string {
	return []string{KeyStatus, StatusOK, KeyWorkspace, "acme", KeyToken, tok, KeyExpiry, "0"}
}

func errorAnswer(code string) []string {
	return []string{KeyStatus, StatusFail, KeyCode, code, KeyMessage, "because " + code}
}

// followed runs a Follower on socket until the test ends and collects what it reports.
type followed struct {
	answers chan *Message
	lost    chan error
	done    chan error // what Run returned
	cancel  context.CancelFunc
}

func follow(t *testing.T, socket string, answer func(*Message) error) *followed {
	t.Helper()
	f := &followed{answers: make(chan *Message, 100), lost: make(chan error, 100), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	fl := &Follower{
		Socket:  socket,
		Request: NewMessage(KeyVersion, Version, KeyAction, ActionWatch, KeyWorkspace, "acme"),
		Answer: func(m *Message) error {
			f.answers <- m
			if answer != nil {
				return answer(m)
			}
			return nil
		},
		Lost:    func(err error) { f.lost <- err },
		Timeout: patience,
	}
	go func() { f.done <- fl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-f.done:
		case <-time.After(patience):
			t.Error("Run did not return after its context ended")
		}
	})
	return f
}

// returned waits for Run to return and gives what it returned.
func (f *followed) returned(t *testing.T, why string) error {
	t.Helper()
	select {
	case err := <-f.done:
		f.done <- err // for the cleanup's wait
		return err
	case <-time.After(patience):
		t.Fatal(why)
	}
	return nil
}

func (f *followed) answer(t *testing.T) *Message {
	t.Helper()
	select {
	case m := <-f.answers:
		return m
	case <-time.After(patience):
		t.Fatal("no answer reached the follower's caller")
	}
	return nil
}

func (f *followed) lostOne(t *testing.T) error {
	t.Helper()
	select {
	case err := <-f.lost:
		return err
	case <-time.After(patience):
		t.Fatal("the follower did not report its lost stream")
	}
	return nil
}

func (f *followed) noLost(t *testing.T) {
	t.Helper()
	select {
	case err := <-f.lost:
		t.Fatalf("Lost was told again: %v", err)
	default:
	}
}

func shortSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ipcf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "d.sock")
}

// With no daemon, the follower waits for one (it never starts one, and says so once), sends
// the same request to the daemon that comes, and hands its answers on.
func TestFollowerWaitsForADaemonAndFollowsIt(t *testing.T) {
	socket := shortSocket(t)
	f := follow(t, socket, nil)
	if err := f.lostOne(t); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Lost was told %v, want an error wrapping ErrUnreachable", err)
	}
	d := listen(t, socket)
	c, req := d.next(t)
	if req.Value(KeyAction) != ActionWatch || req.Value(KeyWorkspace) != "acme" {
		t.Fatalf("the follower sent %v", req.Fields)
	}
	send(t, c, tokenAnswer("t1")...)
	send(t, c, errorAnswer(CodeNoCredentials)...)
	send(t, c, tokenAnswer("t2")...)
	for _, want := range []string{"t1", CodeNoCredentials, "t2"} {
		m := f.answer(t)
		if got := m.Value(KeyToken) + m.Value(KeyCode); got != want {
			t.Fatalf("answer %v, want %s", m.Fields, want)
		}
	}
	f.noLost(t)
}

// A daemon that stops says so: the follower tells Lost (not Answer), dials again, and follows
// the next daemon; a stream that ends without a word is a reason of its own.
func TestFollowerReconnectsAfterShuttingDown(t *testing.T) {
	socket := shortSocket(t)
	d := listen(t, socket)
	f := follow(t, socket, nil)
	c, _ := d.next(t)
	send(t, c, tokenAnswer("t1")...)
	f.answer(t)
	send(t, c, errorAnswer(CodeShuttingDown)...)
	c.Close()
	if err := f.lostOne(t); ErrorCode(err) != CodeShuttingDown {
		t.Fatalf("Lost was told %v, want shutting_down", err)
	}
	c, req := d.next(t)
	if req.Value(KeyWorkspace) != "acme" {
		t.Fatalf("the second request is %v", req.Fields)
	}
	send(t, c, tokenAnswer("t2")...)
	if m := f.answer(t); m.Value(KeyToken) != "t2" {
		t.Fatalf("after the reconnect: %v", m.Fields)
	}
	c.Close()
	if err := f.lostOne(t); err == nil || ErrorCode(err) != "" || errors.Is(err, ErrUnreachable) {
		t.Fatalf("a stream closed without a word: Lost was told %v", err)
	}
	select {
	case m := <-f.answers:
		t.Fatalf("Answer was given %v, which speaks of the connection", m.Fields)
	default:
	}
}

// While the daemon keeps failing the same way, Lost is told once, however many times the
// follower tries; a token ends that, and the next failure is told again.
func TestFollowerTellsEachReasonOnce(t *testing.T) {
	socket := shortSocket(t)
	d := listen(t, socket)
	f := follow(t, socket, nil)
	for i := 0; i < 3; i++ {
		c, _ := d.next(t)
		send(t, c, errorAnswer(CodeBusy)...)
		c.Close()
	}
	if err := f.lostOne(t); ErrorCode(err) != CodeBusy {
		t.Fatalf("Lost was told %v, want busy", err)
	}
	c, _ := d.next(t) // a fourth try: the third busy was seen before it
	f.noLost(t)
	send(t, c, tokenAnswer("t1")...)
	f.answer(t)
	send(t, c, errorAnswer(CodeBusy)...)
	c.Close()
	if err := f.lostOne(t); ErrorCode(err) != CodeBusy {
		t.Fatalf("after a token, Lost was told %v, want busy again", err)
	}
}

// A daemon older than watch answers its first message with unknown_action (or, older still,
// unsupported_version): following it cannot work, and Run says why instead of trying forever.
func TestFollowerStopsOnADaemonOlderThanWatch(t *testing.T) {
	for _, code := range []string{CodeUnknownAction, CodeUnsupportedVersion} {
		t.Run(code, func(t *testing.T) {
			socket := shortSocket(t)
			d := listen(t, socket)
			f := follow(t, socket, nil)
			c, _ := d.next(t)
			send(t, c, errorAnswer(code)...)
			err := f.returned(t, "Run goes on following a daemon older than watch")
			if !errors.Is(err, ErrOldDaemon) || ErrorCode(err) != code {
				t.Fatalf("Run returned %v, want ErrOldDaemon carrying %s", err, code)
			}
			if len(f.answers) != 0 {
				t.Errorf("Answer was given the refusal")
			}
		})
	}
}

// An error from Answer ends Run with it, and the connection with it.
func TestFollowerStopsWhenAnswerFails(t *testing.T) {
	socket := shortSocket(t)
	d := listen(t, socket)
	gone := errors.New("the output is gone")
	f := follow(t, socket, func(*Message) error { return gone })
	c, _ := d.next(t)
	send(t, c, tokenAnswer("t1")...)
	if err := f.returned(t, "Run goes on after Answer failed"); err != gone {
		t.Fatalf("Run returned %v, want Answer's error", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(patience))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the follower sent a byte instead of closing the connection")
	}
}

// A daemon that accepts the watch but never answers it (hung) is left after Timeout, and the
// follower tries again.
func TestFollowerGivesUpOnASilentDaemon(t *testing.T) {
	socket := shortSocket(t)
	d := listen(t, socket)
	f := &Follower{Socket: socket, Request: NewMessage(KeyVersion, Version, KeyAction, ActionWatch),
		Answer: func(*Message) error { return nil }, Timeout: 50 * time.Millisecond}
	lost := make(chan error, 10)
	f.Lost = func(err error) { lost <- err }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	d.next(t) // never answered
	// (So short a Timeout may also end a dial on a loaded machine: only the silence counts.)
	for said := false; !said; {
		select {
		case err := <-lost:
			said = strings.Contains(err.Error(), "did not answer the watch")
		case <-time.After(patience):
			t.Fatal("the follower waits for ever on a silent daemon")
		}
	}
	d.next(t) // and it comes back
}

// Ending the context ends Run at once, whether it reads a stream or waits to dial again.
func TestFollowerEndsWithItsContext(t *testing.T) {
	socket := shortSocket(t)
	d := listen(t, socket)
	f := follow(t, socket, nil)
	c, _ := d.next(t)
	send(t, c, tokenAnswer("t1")...)
	f.answer(t)
	f.cancel()
	if err := f.returned(t, "Run goes on reading a stream after its context ended"); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
	// And while it waits to dial again.
	g := follow(t, shortSocket(t), nil)
	g.lostOne(t)
	g.cancel()
	if err := g.returned(t, "Run goes on waiting to dial after its context ended"); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
}

func TestFollowDelayDoublesToItsCap(t *testing.T) {
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
	for tries, w := range append(want, make([]time.Duration, 60)...) {
		if w == 0 {
			w = FollowMaxDelay
		}
		for range 20 {
			if d := followDelay(tries); d < w*8/10 || d > w*12/10 {
				t.Fatalf("followDelay(%d) = %s, want %s ± 20 %%", tries, d, w)
			}
		}
	}
}
