package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blauth/blauth/ipc"
)

// DefaultMaxMessage is the largest JSON-RPC message the bridge carries either way: a line on
// stdin, an upstream JSON answer, one event of an upstream stream. Past it the message is
// dropped unread (never buffered whole) and the client gets a JSON-RPC error for it.
const DefaultMaxMessage = 4 << 20

// Shutdown bounds: the bridge ends within about ShutdownBound of the end of its input or of a
// signal, whatever the MCP server does. Answers in flight get grace; ending the session gets
// deleteTimeout; what is still running after that (a request, a write to a stdout nobody
// reads) is left to the process's exit.
const (
	ShutdownBound = 2 * time.Second
	defaultGrace  = 1 * time.Second
	deleteTimeout = 500 * time.Millisecond
	finalWait     = 300 * time.Millisecond
)

// maxInFlight bounds the requests the bridge sends at once; past it, it reads no more input
// until one ends (or its input ends: then a message still waiting for a slot is dropped, a
// request answered with a JSON-RPC error).
const maxInFlight = 64

// BridgeConfig describes one MCP bridge.
type BridgeConfig struct {
	URL    string  // the MCP server's Streamable HTTP endpoint (CheckMCPURL)
	Tokens *Tokens // the token sent with every request
	In     io.Reader
	Out    io.Writer // the protocol only: nothing else is ever written to it
	// Client sends the requests; nil is one on DefaultTransport. Redirects are never followed
	// (a redirect would carry the token elsewhere): they end the request with an error.
	Client     *http.Client
	UserAgent  string
	MaxMessage int                           // DefaultMaxMessage when zero
	Logf       func(format string, a ...any) // every problem, for stderr; nil discards them
	// Grace is how long the bridge lets answers in flight finish once its input ends (1 s when
	// zero).
	Grace time.Duration
}

// Bridge carries an MCP session between newline-delimited JSON-RPC on In and Out (the stdio
// transport, as an MCP client that launches a local command speaks it) and the Streamable HTTP
// transport at URL:
//
//   - each line read is POSTed with Accept: application/json, text/event-stream and fresh
//     Authorization, X-Blaxel-Authorization and X-Blaxel-Workspace headers; a JSON answer
//     becomes one line, an SSE answer one line per event, as the events arrive;
//   - the Mcp-Session-Id of the initialize answer is sent with every later request, and so is
//     MCP-Protocol-Version, the version the server chose;
//   - after initialize, a GET stream carries the server's own requests and notifications (a
//     server that offers none answers 405);
//   - a 401 heals once (retryRefused): the bridge asks blauthd to drop the refused token, waits
//     for a new one and sends the request again with it; a second 401 is an error;
//   - when a request cannot be sent or is refused, the client gets a JSON-RPC error for it, and
//     the reason goes to Logf;
//   - at the end of In, answers in flight get Grace to finish, then the session is ended with
//     DELETE; at the end of ctx (a signal) at once: either way within ShutdownBound.
//
// It returns nil at the end of In or ctx, or an error when Out cannot be written or In cannot
// be read.
func Bridge(ctx context.Context, cfg BridgeConfig) error {
	if err := CheckMCPURL(cfg.URL); err != nil {
		return err
	}
	if cfg.Tokens == nil {
		return errors.New("mcp bridge: no token source")
	}
	b := &bridge{cfg: cfg, client: cfg.Client, logf: cfg.Logf, max: cfg.MaxMessage, grace: cfg.Grace}
	if b.client == nil {
		b.client = &http.Client{Transport: DefaultTransport()}
	}
	c := *b.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	b.client = &c
	if b.logf == nil {
		b.logf = func(string, ...any) {}
	}
	if b.max <= 0 {
		b.max = DefaultMaxMessage
	}
	if b.grace <= 0 {
		b.grace = defaultGrace
	}
	return b.run(ctx)
}

type bridge struct {
	cfg    BridgeConfig
	client *http.Client
	logf   func(format string, a ...any)
	max    int
	grace  time.Duration

	// Out is written by one goroutine (writeLoop) alone, so that a client that stops reading
	// stdout holds that goroutine only: write gives up once outQuit is closed at the end.
	outq     chan outMsg
	outQuit  chan struct{}
	outMu    sync.Mutex
	outErr   error
	outSince time.Time // when writeLoop's Write in progress began; zero between writes

	inEnded  chan struct{} // closed when stdin has ended or failed
	graceEnd time.Time     // set before inEnded is closed: the end of the grace after it

	mu          sync.Mutex
	session     string
	protocol    string
	initialized atomic.Bool // an initialize got a result

	streams     context.Context // requests and streams in flight; cancelled to end them
	stopStreams context.CancelFunc
	inflight    sync.WaitGroup // the POSTs in flight
	slots       chan struct{}

	startListen sync.Once
	listenCtx   context.Context // the GET stream's, under streams
	stopListen  context.CancelFunc
	listening   sync.WaitGroup
}

// envelope is what the bridge needs to know of a JSON-RPC message.
type envelope struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

func (e envelope) isRequest() bool  { return e.Method != "" && len(e.ID) > 0 && string(e.ID) != "null" }
func (e envelope) isResponse() bool { return e.Method == "" && (e.Result != nil || e.Error != nil) }

func (b *bridge) run(ctx context.Context) error {
	b.streams, b.stopStreams = context.WithCancel(context.WithoutCancel(ctx))
	defer b.stopStreams()
	b.listenCtx, b.stopListen = context.WithCancel(b.streams)
	b.slots = make(chan struct{}, maxInFlight)
	b.outq, b.outQuit = make(chan outMsg), make(chan struct{})
	go b.writeLoop()
	b.inEnded = make(chan struct{})

	lines := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		err := readLines(b.cfg.In, b.max, func(line []byte) bool {
			select {
			case lines <- line:
				return true
			case <-b.streams.Done():
				return false
			}
		}, func() {
			b.failID(json.RawMessage("null"), -32000, fmt.Sprintf("a message on stdin is over the %d-byte limit of a message; dropped", b.max))
		})
		b.graceEnd = time.Now().Add(b.grace) // read by others after inEnded is closed
		close(b.inEnded)
		readErr <- err
	}()

	var inErr error
	var initDone chan struct{} // an initialize in flight: nothing more is read until it ends
loop:
	for {
		var next chan []byte
		if initDone == nil {
			next = lines
		}
		select {
		case <-ctx.Done():
			break loop
		case inErr = <-readErr:
			break loop
		case <-initDone:
			initDone = nil
			if b.writeErr() != nil {
				break loop
			}
		case line := <-next:
			done, err := b.dispatch(ctx, line)
			if err != nil {
				break loop
			}
			initDone = done
		}
	}
	return b.finish(ctx, inErr)
}

// finish ends the bridge once its input or ctx has ended: no more notifications; answers in
// flight get what is left of the grace (none after a signal), then every request is cut, a
// write still waiting for stdout is given up, and the session is ended.
func (b *bridge) finish(ctx context.Context, inErr error) error {
	b.stopListen()
	if ctx.Err() == nil && b.writeErr() == nil {
		// Only the end of stdin ends run with neither, after graceEnd was set (a line that
		// waited for a slot used some of the grace).
		waitAtMost(ctx, time.Until(b.graceEnd), b.inflight.Wait)
	}
	b.stopStreams()
	waitAtMost(context.Background(), finalWait, b.inflight.Wait, b.listening.Wait)
	b.outMu.Lock()
	// A Write blocked since before the end: the client stopped reading.
	stuck := !b.outSince.IsZero() && time.Since(b.outSince) >= finalWait
	close(b.outQuit) // a write still waiting for stdout gives up
	b.outMu.Unlock()
	b.endSession()
	if err := b.writeErr(); err != nil {
		return err
	}
	if stuck {
		return errors.New("write stdout: the MCP client stopped reading it; messages were left undelivered")
	}
	if inErr != nil {
		return fmt.Errorf("read stdin: %w", inErr)
	}
	return nil
}

// dispatch sends one input line. An initialize is sent before anything else is read: its answer
// carries the session and the protocol version every later request needs; dispatch returns a
// channel closed when it has ended (the caller reads no more until then, but still hears the
// end of its input and signals). It returns an error only when the output is gone.
func (b *bridge) dispatch(ctx context.Context, line []byte) (chan struct{}, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, nil
	}
	if !json.Valid(line) {
		b.logf("a line on stdin is not JSON; it was not sent")
		b.failID(json.RawMessage("null"), -32700, "a line on stdin is not JSON; it was not sent")
		return nil, b.writeErr()
	}
	var env envelope
	_ = json.Unmarshal(line, &env) // a batch (an array) has no envelope: it is passed on as is
	if env.Method == "initialize" {
		done := make(chan struct{})
		b.inflight.Add(1)
		go func() {
			defer func() { b.inflight.Done(); close(done) }()
			b.post(ctx, line, env, true)
			if b.initialized.Load() {
				b.startListen.Do(func() {
					b.listening.Add(1)
					go func() {
						defer b.listening.Done()
						b.listen()
					}()
				})
			}
		}()
		return done, b.writeErr()
	}
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, nil
	case <-b.inEnded:
		// No more input: this message waits for a slot only within the grace that answers in
		// flight are given to finish.
		select {
		case b.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Until(b.graceEnd)):
			b.fail(env, fmt.Sprintf("not sent: stdin ended with %d requests still waiting for the MCP server", maxInFlight))
			return nil, b.writeErr()
		}
	}
	b.inflight.Add(1)
	go func() {
		defer func() { <-b.slots; b.inflight.Done() }()
		b.post(ctx, line, env, false)
	}()
	return nil, b.writeErr()
}

// readLines calls each for every line of r (without its end) until r ends (nil) or fails, or
// each returns false. A line over max bytes is never held whole: it is skipped to its end and
// tooLong is called instead.
func readLines(r io.Reader, max int, each func([]byte) bool, tooLong func()) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	skipping := false
	for {
		part, err := br.ReadSlice('\n')
		if !skipping {
			line = append(line, part...)
			if len(line) > max+1 {
				skipping, line = true, nil
			}
		}
		switch {
		case err == nil:
			if skipping {
				tooLong()
			} else if !each(bytes.TrimSuffix(bytes.Clone(line), []byte("\n"))) {
				return nil
			}
			line, skipping = line[:0], false
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			if skipping {
				tooLong()
			} else if len(bytes.TrimSpace(line)) > 0 {
				each(bytes.Clone(line))
			}
			return nil
		default:
			return err
		}
	}
}

// waitAtMost runs each wait in turn until all have returned, d has passed or ctx has ended.
func waitAtMost(ctx context.Context, d time.Duration, waits ...func()) {
	done := make(chan struct{})
	go func() {
		for _, w := range waits {
			w()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// send sends a request of method to the MCP server's URL, with body (nil for none) and header,
// under reqCtx, with the current token (waited for within ctx) and the session and protocol
// headers; a 401 heals once (retryRefused). Its error leaves out the URL (net/http's
// *url.Error names it, query included), which may hold a key: the user knows which server it is.
func (b *bridge) send(ctx, reqCtx context.Context, method string, body io.Reader, header http.Header) (*http.Response, error) {
	cred, err := b.cfg.Tokens.Current(ctx)
	if err != nil {
		return nil, &noTokenError{err}
	}
	req, err := http.NewRequestWithContext(reqCtx, method, b.cfg.URL, body) // the URL parses: Bridge checked it
	if err != nil {
		return nil, err
	}
	req.Header = header
	setCred(req.Header, allCredForms, cred)
	if b.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", b.cfg.UserAgent)
	}
	b.mu.Lock()
	session, protocol := b.session, b.protocol
	b.mu.Unlock()
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	if protocol != "" {
		req.Header.Set("Mcp-Protocol-Version", protocol)
	}
	resp, err := b.do(req)
	if err != nil {
		return nil, err
	}
	return retryRefused(b.cfg.Tokens, &cred, allCredForms, req, resp, b.do)
}

// post sends one message and carries its answer back.
func (b *bridge) post(ctx context.Context, msg []byte, env envelope, initialize bool) {
	resp, err := b.send(ctx, b.streams, http.MethodPost, bytes.NewReader(msg),
		http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}})
	var noToken *noTokenError
	switch {
	case errors.As(err, &noToken):
		b.fail(env, err.Error())
		return
	case err != nil:
		if b.streams.Err() == nil {
			b.fail(env, "the MCP server did not answer: "+err.Error())
		}
		return
	}
	defer resp.Body.Close()
	if initialize && resp.StatusCode/100 == 2 {
		if id := resp.Header.Get("Mcp-Session-Id"); id != "" {
			b.mu.Lock()
			b.session = id
			b.mu.Unlock()
		}
	}
	switch {
	case resp.StatusCode == http.StatusAccepted:
		return
	case resp.StatusCode/100 == 2:
		b.answer(resp, env, initialize)
	case resp.StatusCode == http.StatusNotFound && b.hasSession():
		b.fail(env, "the MCP server ended the session (404): restart the MCP client to open a new one")
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		b.fail(env, fmt.Sprintf("the MCP server answered %s: %s", resp.Status, oneLine(string(body))))
	}
}

// answer carries a 2xx answer to the output: a JSON body as one line, an event stream as one
// line per event.
func (b *bridge) answer(resp *http.Response, env envelope, initialize bool) {
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	answered := false
	deliver := func(msg []byte) error {
		got, err := b.deliver(msg, initialize)
		if env.isRequest() && bytes.Equal(got.ID, env.ID) && got.isResponse() {
			answered = true
		}
		return err
	}
	switch ct {
	case "text/event-stream":
		err := readEvents(resp.Body, b.max, func(ev event) error {
			if ev.name != "" && ev.name != "message" {
				return nil
			}
			return deliver(ev.data)
		})
		switch {
		case errors.Is(err, errTooLong) && b.streams.Err() == nil && !answered:
			answered = true
			b.fail(env, fmt.Sprintf("an event of the MCP server's answer is over the %d-byte limit of a message; the rest of the stream is dropped", b.max))
		case err != nil && b.streams.Err() == nil && b.writeErr() == nil:
			b.logf("the MCP server's event stream broke: %v", err)
		}
	case "application/json":
		body, err := io.ReadAll(io.LimitReader(resp.Body, int64(b.max)+1))
		switch {
		case err != nil:
			b.logf("reading the MCP server's answer: %v", err)
		case len(body) > b.max:
			answered = true
			b.fail(env, fmt.Sprintf("the MCP server's answer is over the %d-byte limit of a message; dropped", b.max))
		case len(bytes.TrimSpace(body)) > 0:
			_ = deliver(body)
		}
	default:
		if env.isRequest() {
			b.fail(env, fmt.Sprintf("the MCP server answered with %q, neither JSON nor an event stream", ct))
		}
		return
	}
	if env.isRequest() && !answered && b.streams.Err() == nil && b.writeErr() == nil {
		b.fail(env, "the MCP server's answer ended without a response to this request")
	}
}

// deliver writes one message from the server as one line, and learns the protocol version from
// the initialize answer.
func (b *bridge) deliver(msg []byte, initialize bool) (envelope, error) {
	var line bytes.Buffer
	if err := json.Compact(&line, msg); err != nil {
		b.logf("the MCP server sent a message that is not JSON; dropped")
		return envelope{}, nil
	}
	var env envelope
	_ = json.Unmarshal(line.Bytes(), &env)
	if initialize && env.isResponse() && env.Result != nil {
		b.initialized.Store(true)
		var r struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		if json.Unmarshal(env.Result, &r) == nil && r.ProtocolVersion != "" && !strings.ContainsAny(r.ProtocolVersion, "\r\n") {
			b.mu.Lock()
			b.protocol = r.ProtocolVersion
			b.mu.Unlock()
		}
	}
	line.WriteByte('\n')
	return env, b.write(line.Bytes())
}

// outMsg is one line for stdout, and where its write's result goes.
type outMsg struct {
	p    []byte
	done chan error // buffered: writeLoop never waits on it
}

// errOutAbandoned is what a write returns once the bridge has ended without it.
var errOutAbandoned = errors.New("write stdout: the bridge ended before the MCP client read this")

// writeLoop writes every line to Out, one at a time, until the bridge ends. A Write that never
// returns (a client that stopped reading) holds this goroutine only; the process's exit ends it.
func (b *bridge) writeLoop() {
	for {
		select {
		case m := <-b.outq:
			b.outMu.Lock()
			b.outSince = time.Now()
			b.outMu.Unlock()
			_, err := b.cfg.Out.Write(m.p)
			b.outMu.Lock()
			b.outSince = time.Time{}
			if err != nil && b.outErr == nil {
				b.outErr = fmt.Errorf("write stdout: %w", err)
			}
			b.outMu.Unlock()
			if err != nil {
				b.stopStreams() // nobody reads any more
			}
			m.done <- err
		case <-b.outQuit:
			return
		}
	}
}

// write hands p to writeLoop and waits for it to be written, or for the bridge to end.
func (b *bridge) write(p []byte) error {
	if err := b.writeErr(); err != nil {
		return err
	}
	m := outMsg{p: p, done: make(chan error, 1)}
	select {
	case b.outq <- m:
	case <-b.outQuit:
		return errOutAbandoned
	}
	select {
	case err := <-m.done:
		if err != nil {
			return b.writeErr()
		}
		return nil
	case <-b.outQuit:
		return errOutAbandoned
	}
}

func (b *bridge) writeErr() error {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	return b.outErr
}

// fail reports a message that could not be carried: to Logf, and to the client as a JSON-RPC
// error when it was a request, so that the client does not wait for ever.
func (b *bridge) fail(env envelope, reason string) {
	b.logf("%s", reason)
	if env.isRequest() {
		b.failID(env.ID, -32000, reason)
	}
}

// failID writes a JSON-RPC error for id ("null" when the request's id is unknown): code -32000,
// or -32700 for a line that does not parse.
func (b *bridge) failID(id json.RawMessage, code int, reason string) {
	type rpcError struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	msg, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}{JSONRPC: "2.0", ID: id, Error: rpcError{code, "blauth mcp bridge: " + reason}})
	_ = b.write(append(msg, '\n'))
}

func (b *bridge) hasSession() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.session != ""
}

// listen keeps the GET stream open for the server's own messages until the bridge ends, or the
// server says it offers none.
func (b *bridge) listen() {
	lastID := ""
	said := ""
	for attempt := 0; b.listenCtx.Err() == nil; {
		status, err := b.listenOnce(&lastID)
		switch {
		case b.listenCtx.Err() != nil:
			return
		case status == http.StatusMethodNotAllowed, status == http.StatusConflict:
			return // no stream offered, or one is open already
		case status == http.StatusNotFound && b.hasSession():
			b.logf("the MCP server ended the session (404); its notifications stop")
			return
		case status/100 == 4 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
			b.logf("the MCP server refused its notification stream (%v); going on without it", err)
			return
		case status == http.StatusOK && err == nil:
			attempt = 0 // the server closed a stream that worked: open it again
		case err != nil && err.Error() != said:
			said = err.Error()
			b.logf("the MCP server's notification stream: %v; reopening", err)
		}
		attempt++
		select {
		case <-b.listenCtx.Done():
			return
		case <-time.After(reconnect.Delay(attempt)):
		}
	}
}

func (b *bridge) listenOnce(lastID *string) (int, error) {
	header := http.Header{"Accept": {"text/event-stream"}}
	if *lastID != "" {
		header.Set("Last-Event-ID", *lastID)
	}
	resp, err := b.send(b.listenCtx, b.listenCtx, http.MethodGet, nil, header)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("answered %s", resp.Status)
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "text/event-stream" {
		return http.StatusMethodNotAllowed, nil // not a stream: treat it as none offered
	}
	err = readEvents(resp.Body, b.max, func(ev event) error {
		if ev.id != "" {
			*lastID = ev.id
		}
		if ev.name != "" && ev.name != "message" {
			return nil
		}
		_, err := b.deliver(ev.data, false)
		return err
	})
	return http.StatusOK, err
}

// endSession tells the server the session is over (DELETE), when there is one.
func (b *bridge) endSession() {
	if !b.hasSession() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	defer cancel()
	resp, err := b.send(ctx, ctx, http.MethodDelete, nil, http.Header{})
	if err != nil {
		b.logf("the session was not ended on the server: %v", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusMethodNotAllowed {
		b.logf("ending the session: the MCP server answered %s", resp.Status)
	}
}

// noTokenError is send's error when there is no token to send: nothing was sent.
type noTokenError struct{ err error }

func (e *noTokenError) Error() string { return "no token to send: " + e.err.Error() }
func (e *noTokenError) Unwrap() error { return e.err }

// do sends req, its error without the URL (see send).
func (b *bridge) do(req *http.Request) (*http.Response, error) {
	resp, err := b.client.Do(req)
	var ue *url.Error
	if errors.As(err, &ue) {
		err = fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return resp, err
}

// oneLine makes s fit one log line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return ipc.Clip(s, 300)
}
