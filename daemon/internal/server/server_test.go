package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon/internal/broker"
	"github.com/blauth/blauth/daemon/internal/resolver"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// fakeResolver answers every request with one workspace's credential, or with err. Its
// resolutions are reusable until stamp moves; resolves counts them.
type fakeResolver struct {
	cred     *sources.Credential
	err      error
	stamp    atomic.Uint64
	resolves atomic.Int64
}

func (f *fakeResolver) ResolveInto(res *resolver.Resolution, req resolver.Request) error {
	f.resolves.Add(1)
	if f.err != nil {
		*res = resolver.Resolution{Workspace: req.Workspace}
		return f.err
	}
	*res = resolver.Resolution{Workspace: f.cred.Workspace, Credential: f.cred, Reusable: true}
	return nil
}
func (f *fakeResolver) Stamp() uint64                       { return f.stamp.Load() }
func (f *fakeResolver) Changed() <-chan struct{}            { return nil }
func (f *fakeResolver) Workspaces() []string                { return []string{f.cred.Workspace} }
func (f *fakeResolver) SourceErrors() []sources.SourceError { return nil }
func (f *fakeResolver) WatchedDotenvs() int                 { return 0 }
func (f *fakeResolver) DaemonBaseURL(string) string         { return sources.DefaultBaseURL }
func (f *fakeResolver) ReloadKeyring(context.Context)       {}

// fakeBroker serves the token it holds; set replaces it and announces the change to the
// holders of that credential only.
type fakeBroker struct {
	mu     sync.Mutex
	tok    map[string]broker.Served
	err    error
	holds  map[string]*fakeHold
	gets   int
	erased []string
}

// fakeHold is the watchers of one credential.
type fakeHold struct {
	mu    sync.Mutex
	wakes []func()
}

func (h *fakeHold) Release() {}

func (h *fakeHold) wakesNow() []func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.wakes
}
func (h *fakeHold) announce() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.wakes {
		w()
	}
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{tok: map[string]broker.Served{}, holds: map[string]*fakeHold{}}
}

func (b *fakeBroker) Get(_ context.Context, c *sources.Credential, _ time.Duration, _ bool) (broker.Served, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gets++
	if b.err != nil {
		return broker.Served{}, b.err
	}
	return b.tok[c.Key()], nil
}

func (b *fakeBroker) hold(c *sources.Credential) *fakeHold {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.holds[c.Key()]
	if h == nil {
		h = &fakeHold{}
		b.holds[c.Key()] = h
	}
	return h
}

func (b *fakeBroker) Hold(c *sources.Credential, wake func()) broker.Holder {
	h := b.hold(c)
	h.mu.Lock()
	h.wakes = append(h.wakes, wake)
	h.mu.Unlock()
	return h
}
func (b *fakeBroker) Erase(c *sources.Credential, value string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.erased = append(b.erased, value)
	return true
}
func (b *fakeBroker) Lookup(*sources.Credential) (ipc.CachedStatus, bool) {
	return ipc.CachedStatus{}, false
}
func (b *fakeBroker) Status() []ipc.CachedStatus { return nil }
func (b *fakeBroker) MinTTL() time.Duration      { return 0 }

func (b *fakeBroker) set(c *sources.Credential, tok string, exp time.Time) {
	b.mu.Lock()
	b.tok[c.Key()] = broker.Served{Token: tok, Expiry: exp}
	b.mu.Unlock()
	b.hold(c).announce()
}

// serve runs a Server with res and br on a real socket until the test ends.
func serve(t *testing.T, res Resolver, br Broker) string {
	t.Helper()
	path, _ := serveStoppable(t, res, br)
	return path
}

// serveStoppable is serve, and a function that stops the server (as the daemon does) and waits
// for Serve to return.
func serveStoppable(t *testing.T, res Resolver, br Broker) (string, func()) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, Config{Log: zerolog.New(zerolog.NewTestWriter(t)), Resolver: res, Broker: br, Clock: clock.Wall{},
		RequestTimeout: 30 * time.Second, IdleTimeout: time.Minute, WatchWriteTimeout: 30 * time.Second, MaxConns: 64, MaxWatchers: 64})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, context.Background(), 5*time.Second) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return path, stop
}

// A client whose connection was open when the daemon stopped, and that sends its request a
// moment later (a restart under systemd), still gets its answer, not a reset connection.
func TestRequestSentJustAfterStopIsAnswered(t *testing.T) {
	cred, br := sa("acme"), newFakeBroker()
	br.set(cred, "tok-1", time.Now().Add(time.Hour).Truncate(time.Second))
	path, stop := serveStoppable(t, &fakeResolver{cred: cred}, br)
	c, err := ipc.Dial(path, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet, ipc.KeyDir, "/")
	if _, err := c.Do(req); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	// The listener is closed first, then the connections waiting for a request are told.
	testkit.WaitFor(t, 30*time.Second, "the server stops listening", func() bool {
		nc, err := net.Dial("unix", path)
		if err == nil {
			nc.Close()
		}
		return err != nil
	})
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("a request sent just after the stop: %v, want its answer", err)
	}
	if tok, err := ipc.ParseToken(resp); err != nil || tok.Token != "tok-1" {
		t.Fatalf("answer %v %v, want tok-1", tok, err)
	}
	<-stopped
}

func sa(ws string) *sources.Credential {
	return &sources.Credential{Workspace: ws, Kind: ipc.KindClientCredentials, ClientCredentials: "cc-" + ws, BaseURL: sources.DefaultBaseURL,
		Source: sources.Provenance{Kind: sources.SourceDaemonEnv, Where: "BL_CLIENT_CREDENTIALS"}}
}

func get(t *testing.T, path string) *ipc.Message {
	t.Helper()
	c, err := ipc.Dial(path, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Do(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet, ipc.KeyDir, "/"))
	if err != nil && ipc.AsError(resp) == nil {
		t.Fatal(err) // not an answer
	}
	return resp
}

// TestGetAnswersTheBrokersTokenWithItsProvenance: the token, its workspace, kind and source as
// the resolver and broker gave them.
func TestGetAnswersTheBrokersTokenWithItsProvenance(t *testing.T) {
	cred, br := sa("acme"), newFakeBroker()
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	br.set(cred, "tok-1", exp)
	resp := get(t, serve(t, &fakeResolver{cred: cred}, br))
	if err := ipc.AsError(resp); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{ipc.KeyToken: "tok-1", ipc.KeyWorkspace: "acme", ipc.KeyKind: ipc.KindClientCredentials,
		ipc.KeySource: "daemon_env:BL_CLIENT_CREDENTIALS"} {
		if got := resp.Value(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

// TestSameGetOnAConnectionIsResolvedOnceWhileTheStampStays: a connection sending the same get
// again is answered from its last resolution while the resolver's stamp stays, with the broker
// asked every time (its newest token is served); a moved stamp or another request resolves anew.
func TestSameGetOnAConnectionIsResolvedOnceWhileTheStampStays(t *testing.T) {
	cred, br := sa("acme"), newFakeBroker()
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	br.set(cred, "tok-1", exp)
	res := &fakeResolver{cred: cred}
	c, err := ipc.Dial(serve(t, res, br), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func(dir, wantTok string) {
		t.Helper()
		resp, err := c.Do(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet, ipc.KeyDir, dir))
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Value(ipc.KeyToken); got != wantTok {
			t.Fatalf("token %q, want %q", got, wantTok)
		}
	}
	for range 5 {
		ask("/p", "tok-1")
	}
	if n := res.resolves.Load(); n != 1 {
		t.Errorf("5 same gets resolved %d times, want 1", n)
	}
	br.set(cred, "tok-2", exp)
	ask("/p", "tok-2")
	res.stamp.Add(1)
	ask("/p", "tok-2")
	ask("/q", "tok-2")
	if n := res.resolves.Load(); n != 3 {
		t.Errorf("after a new token, a moved stamp and another directory: %d resolutions, want 3", n)
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.gets != 8 {
		t.Errorf("the broker was asked %d times for 8 gets", br.gets)
	}
}

// TestErrorsBecomeCodes: a resolver that finds nothing and a broker refused for good each get
// their code, not an internal error.
func TestErrorsBecomeCodes(t *testing.T) {
	cred := sa("acme")
	res := &fakeResolver{cred: cred, err: resolver.ErrNoCredentials}
	if code := ipc.ErrorCode(ipc.AsError(get(t, serve(t, res, newFakeBroker())))); code != ipc.CodeNoCredentials {
		t.Errorf("no credentials answered %q", code)
	}
	br := newFakeBroker()
	br.err = &broker.Error{Reason: broker.Refused, Workspace: "acme", Kind: cred.Kind}
	if code := ipc.ErrorCode(ipc.AsError(get(t, serve(t, &fakeResolver{cred: cred}, br)))); code != ipc.CodeAuthFailed {
		t.Errorf("a refused credential answered %q", code)
	}
}

// TestWatchSendsEachNewTokenOfItsCredentialOnly: a watcher gets its first answer, then one new
// message per new token of its own credential; a refresh of another credential sends nothing.
func TestWatchSendsEachNewTokenOfItsCredentialOnly(t *testing.T) {
	cred, other, br := sa("acme"), sa("other"), newFakeBroker()
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	br.set(cred, "tok-1", exp)
	path := serve(t, &fakeResolver{cred: cred}, br)
	c, r := watchOn(t, path)
	read := func() *ipc.Message {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		m, err := ipc.ReadMessage(r)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := read(); m.Value(ipc.KeyToken) != "tok-1" || m.Value(ipc.KeySeq) != "1" {
		t.Fatalf("first message %v", m.Fields)
	}
	br.mu.Lock()
	getsBefore := br.gets
	br.mu.Unlock()
	br.set(other, "other-2", exp) // another credential's refresh: nothing for this watcher
	br.set(cred, "tok-2", exp.Add(time.Hour))
	m := read()
	if m.Value(ipc.KeyToken) != "tok-2" || m.Value(ipc.KeySeq) != "2" {
		t.Fatalf("after the refresh: %v", m.Fields)
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if n := br.gets - getsBefore; n != 1 {
		t.Errorf("the watcher looked %d times for one refresh of its own credential (another's woke it?)", n)
	}
}

// TestWatchersOfOneRequestShareEachAnswer: a refresh wakes every watcher of its credential, and
// they are sent one answer, looked up and encoded once, each with its own seq=. With one P, every
// wake is counted before the fan-out looks: exactly one look goes to the broker.
func TestWatchersOfOneRequestShareEachAnswer(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	cred, br := sa("acme"), newFakeBroker()
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	br.set(cred, "tok-1", exp)
	path := serve(t, &fakeResolver{cred: cred}, br)
	const watchers = 10
	var rs []*bufio.Reader
	for range watchers {
		_, r := watchOn(t, path)
		if m, err := ipc.ReadMessage(r); err != nil || m.Value(ipc.KeyToken) != "tok-1" {
			t.Fatalf("first message: %v %v", m, err)
		}
		rs = append(rs, r)
	}
	// Each watcher takes its hold after its first answer, then looks again: two gets each.
	const getsBefore = 2 * watchers
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		br.mu.Lock()
		n := br.gets
		br.mu.Unlock()
		if n == 2*watchers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d gets before the refresh, want %d (a first look and a look after the hold, per watcher)", n, 2*watchers)
		}
	}
	br.set(cred, "tok-2", exp.Add(time.Hour))
	for i, r := range rs {
		m, err := ipc.ReadMessage(r)
		if err != nil || m.Value(ipc.KeyToken) != "tok-2" || m.Value(ipc.KeySeq) != "2" || m.Value(ipc.KeyVersion) != ipc.Version {
			t.Fatalf("watcher %d after the refresh: %v %v", i, m, err)
		}
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if n := br.gets - getsBefore; n != 1 {
		t.Errorf("%d watchers of one request looked %d times for one refresh, want once", watchers, n)
	}
}

// TestWatchThroughAFullSocket: a watcher that does not read while its token is refreshed again
// and again fills its socket; the fan-out cannot write a message at once, and leaves the rest to
// the watcher's goroutine. Once the client reads, it gets whole messages in order (no torn or
// lost one: each seq= one more than the last), and the last is the newest token.
func TestWatchThroughAFullSocket(t *testing.T) {
	cred, br := sa("acme"), newFakeBroker()
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	big := func(i int) string { return fmt.Sprintf("tok-%03d-%s", i, strings.Repeat("x", 12<<10)) }
	br.set(cred, big(0), exp)
	path := serve(t, &fakeResolver{cred: cred}, br)
	_, r := watchOn(t, path)
	if m, err := ipc.ReadAnswer(r); err != nil || m.Value(ipc.KeyToken) != big(0) {
		t.Fatalf("first message: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "the watcher's hold", func() bool { return len(br.hold(cred).wakesNow()) > 0 })
	const refreshes = 200 // about 2.4 MB: more than a Unix socket buffers
	for i := 1; i <= refreshes; i++ {
		br.set(cred, big(i), exp.Add(time.Duration(i)*time.Second))
		time.Sleep(2 * time.Millisecond)
	}
	seq := 1
	for {
		m, err := ipc.ReadAnswer(r)
		if err != nil {
			t.Fatalf("after seq=%d: %v", seq, err)
		}
		n, _ := strconv.Atoi(m.Value(ipc.KeySeq))
		if n != seq+1 {
			t.Fatalf("seq=%d after seq=%d", n, seq)
		}
		seq = n
		if m.Value(ipc.KeyToken) == big(refreshes) {
			break
		}
	}
	if seq < 3 {
		t.Errorf("only %d messages for %d refreshes", seq, refreshes)
	}
}

// TestFanOutLeavesAHalfSentMessageToItsWatcher: while the rest of a message the fan-out could not
// write whole waits for the watcher's goroutine, the fan-out writes nothing to that watcher (a
// new message would land in the middle of the old one) and leaves it to the goroutine.
func TestFanOutLeavesAHalfSentMessageToItsWatcher(t *testing.T) {
	a, b, err := socketPair(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	raw, err := a.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	w := &watcher{s: s, c: a, raw: raw, seq: 1, pending: []byte("rest of message 1\n\n")}
	ans := &watchAnswer{wire: []byte("version=2\nstatus=ok\ntoken=tok-2\n"), digest: [32]byte{2}, seen: 1}
	var buf []byte
	if s.deliver(w, ans, &buf) != handOver {
		t.Fatal("deliver did not hand a watcher whose last message is half sent to its goroutine")
	}
	if w.seq != 1 || string(w.pending) != "rest of message 1\n\n" {
		t.Fatalf("deliver changed the watcher: seq=%d pending=%q", w.seq, w.pending)
	}
	_ = b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := b.Read(make([]byte, 64)); n > 0 || err == nil {
		t.Fatalf("the fan-out wrote %d bytes before the rest of the last message", n)
	}
	w.pending = nil // once the goroutine has sent the rest, the next answer is the fan-out's to write
	if s.deliver(w, ans, &buf) != delivered || w.seq != 2 {
		t.Fatalf("deliver did not write the next message (seq=%d)", w.seq)
	}
}

// watchOn opens a watch of directory / on the server at path, with 30 s to do everything on it;
// the connection is closed when the test ends.
func watchOn(t *testing.T, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := ipc.WriteMessage(c, ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionWatch, ipc.KeyDir, "/")); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// socketPair is a connected pair of Unix stream sockets, listened for in dir.
func socketPair(dir string) (net.Conn, net.Conn, error) {
	path := filepath.Join(dir, "pair.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	b, err := net.Dial("unix", path)
	if err != nil {
		return nil, nil, err
	}
	a, err := ln.Accept()
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return a, b, nil
}
