package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blauth/blauth/ipc"
)

// The path prefixes of the proxy, the layout of the TypeScript SDK's own proxy setting
// ({proxy}/api and {proxy}/run): BL_API_URL is {listener}/api and BL_RUN_URL {listener}/run.
const (
	APIPrefix = "/api"
	RunPrefix = "/run"
)

// credHeaders are the header forms a Blaxel bearer credential travels in: the TypeScript SDK
// sends X-Blaxel-Authorization, MCP clients and REST tools Authorization; the API takes both.
var credHeaders = [...]string{"Authorization", "X-Blaxel-Authorization"}

// Config describes a Server.
type Config struct {
	Tokens *Tokens // where tokens come from
	Secret Secret  // what every request must carry
	// RunURL is BL_RUN_URL from the environment blauth-proxy was started with ("" when unset):
	// see RunBase.
	RunURL string
	// RunDomains are the run domains the /host route reaches besides those of the API base
	// (see RunDomains); each already checked by ipc.ParseRunDomains.
	RunDomains []string
	// Transport sends requests upstream; nil is a clone of http.DefaultTransport (TLS verified,
	// HTTPS_PROXY honoured) that keeps up to 64 idle connections per host.
	Transport http.RoundTripper
	// Logf receives the proxy's lines: a summary of refused requests and connections at most
	// once per 5 s, one line per upstream failure; nil discards them. None holds a token, the
	// secret or a credential header.
	Logf func(format string, a ...any)
}

// The bounds on what a local process, with or without the secret, can make the proxy hold or
// write (docs/IDE.md, "Security model of the proxy", states each).
const (
	// maxHeaderBytes bounds a request's line and headers (Go reads up to 4 KiB more before it
	// answers 431 and closes).
	maxHeaderBytes = 64 << 10
	// maxHeaderCount bounds its header lines: one more is answered 431 (net/http parses at
	// most 500 and answers 400 past them).
	maxHeaderCount = 100
	// headerTimeout bounds the time from a connection's start, or from the first byte of a
	// kept-alive connection's next request, to the end of the request's headers.
	headerTimeout = 5 * time.Second
	// idleTimeout closes a kept-alive connection that sends no next request.
	idleTimeout = 2 * time.Minute
	// maxWaiting is how many connections that have not yet shown the secret the proxy holds at
	// once; one more closes the oldest of them.
	maxWaiting = 128
	// summaryEvery is the period of the log line that counts refusals.
	summaryEvery = 5 * time.Second
)

// limits are the bounds a Server applies: the constants above, smaller in tests.
type limits struct {
	headerTimeout, idleTimeout, summaryEvery time.Duration
	maxWaiting                               int
}

// Server is the injecting reverse proxy. It is an http.Handler, safe for concurrent use; Serve
// adds the bounds on connections.
type Server struct {
	tokens    *Tokens
	secret    Secret
	runBase   *upstream // BL_RUN_URL, checked once; nil to follow each token's API base
	apiBases  atomic.Pointer[apiBases]
	transport http.RoundTripper
	proxy     *httputil.ReverseProxy // one for every request: the route travels in the context
	logf      func(format string, a ...any)
	refusals  *tally
	limits    limits

	runDomains []string // Config.RunDomains
}

// NewServer checks cfg and returns the proxy.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Tokens == nil {
		return nil, errors.New("proxy: no token source")
	}
	if len(cfg.Secret.b) == 0 {
		return nil, errors.New("proxy: no secret")
	}
	s := &Server{tokens: cfg.Tokens, secret: cfg.Secret, runDomains: cfg.RunDomains, transport: cfg.Transport, logf: cfg.Logf,
		limits: limits{headerTimeout: headerTimeout, idleTimeout: idleTimeout, summaryEvery: summaryEvery, maxWaiting: maxWaiting}}
	if cfg.RunURL != "" {
		base, err := RunBase("", cfg.RunURL)
		if err != nil {
			return nil, err
		}
		if s.runBase, err = parseBase(base); err != nil {
			return nil, fmt.Errorf("BL_RUN_URL: %w", err)
		}
	}
	if s.transport == nil {
		s.transport = DefaultTransport()
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	s.refusals = &tally{logf: s.logf, lim: &s.limits}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		ModifyResponse: s.modifyResponse,
		Transport:      roundTripFunc(s.send),
		BufferPool:     copyBuffers,
		// 0: an answer of unknown length (a stream: logs, chunked output) or an event stream is
		// flushed on every write of the upstream all the same (ReverseProxy does it for them); an
		// answer of known length goes out in one write. -1 flushed the headers from a timer
		// goroutine of each request, then the body: two writes and a goroutine per answer.
		FlushInterval: 0,
		ErrorLog:      log.New(logfWriter(s.logf), "", 0), // one line per failed copy
		ErrorHandler:  s.upstreamError,
	}
	return s, nil
}

// DefaultTransport is the upstream transport a Server uses unless told otherwise.
func DefaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	return t
}

// Listen opens the proxy's listener: TCP on 127.0.0.1, on a port the system picks.
func Listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// Serve answers requests on ln until ctx ends, then closes ln and every connection, streams in
// flight included, and writes the last summary of refusals. A connection that has not shown
// the secret yet is bounded in header size, header count and time, and at most limits.maxWaiting
// of them are held: a new one closes the oldest, so that a process without the secret cannot
// keep the child's new connections out.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.refusals.flush()
	g := &gate{max: s.limits.maxWaiting, evicted: func() { s.refusals.add(closedWaiting, "") }}
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.limits.headerTimeout,
		IdleTimeout:       s.limits.idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(logfWriter(s.serverError), "", 0), // counted in the summary
		ConnContext:       withConn,
	}
	stop := context.AfterFunc(ctx, func() { hs.Close() })
	defer stop()
	if err := hs.Serve(&gateListener{Listener: ln, g: g}); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// forward is one request's route: what Rewrite, the last check before sending and
// ModifyResponse need, carried in the request's context.
type forward struct {
	target url.URL   // the upstream URL, built from base's fields
	base   *upstream // the base target must stay under
	prefix string
	forms  credForms // the credential header forms the client used
	cred   Credential
	// answers names the run URLs of the API's answer that are rewritten (runanswers.go).
	answers answerFields
}

type forwardKey struct{}

func forwardOf(ctx context.Context) *forward {
	fw, _ := ctx.Value(forwardKey{}).(*forward)
	return fw
}

// ServeHTTP admits a request that carries the secret, picks its upstream by prefix, and
// forwards it with the current token in place of the secret (a 401 heals once: heal.go).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if n := headerLines(r.Header); n > maxHeaderCount {
		s.refusals.add(tooManyHeaders, "")
		w.Header().Set("Connection", "close")
		plain(w, http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("blauth-proxy: refused: %d header lines, more than %d", n, maxHeaderCount))
		return
	}
	forms, problem := s.admit(r.Header)
	if problem != "" {
		s.refusals.add(noSecret, "")
		w.Header().Set("WWW-Authenticate", `Bearer realm="blauth-proxy"`)
		w.Header().Set("Connection", "close") // a connection without the secret is not kept open
		plain(w, http.StatusUnauthorized, "blauth-proxy: refused: "+problem)
		return
	}
	if c := connOf(r.Context()); c != nil {
		c.showed()
	}
	prefix, rest, rawRest, status, problem := splitTarget(r)
	if problem != "" {
		s.refusals.add(badTarget, r.Method+" "+s.redact(r.RequestURI, true))
		plain(w, status, "blauth-proxy: "+problem)
		return
	}
	cred, err := s.tokens.Current(r.Context())
	if err != nil {
		if r.Context().Err() != nil {
			return // the client is gone
		}
		msg := "blauth-proxy: no token to send: " + err.Error()
		var e *ipc.Error
		if errors.As(err, &e) && e.Hint != "" {
			msg += "\nhint: " + e.Hint
		}
		s.logf("%s %s: no token to send: %v", r.Method, prefix, err)
		plain(w, http.StatusServiceUnavailable, msg)
		return
	}
	fw, status, err := s.route(prefix, rest, rawRest, r.URL.RawQuery, cred)
	if err != nil {
		plain(w, status, "blauth-proxy: "+err.Error())
		return
	}
	fw.forms = forms
	// An HTTP/1 handler otherwise reads the rest of the request body before answering: a client
	// that streams its request while reading the answer would wait for ever.
	_ = http.NewResponseController(w).EnableFullDuplex()
	s.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, fw)))
}

func headerLines(h http.Header) int {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	return n
}

// rewrite points the outgoing request at its route's target with the token in every credential
// header form the client used and the workspace named. It is Rewrite (not Director): the
// hop-by-hop and X-Forwarded-* headers are gone before it runs, and none is added, so the
// upstream learns nothing about the local client.
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	fw := forwardOf(pr.In.Context())
	if fw == nil {
		return // send refuses it
	}
	pr.Out.URL = &fw.target
	pr.Out.Host = ""
	setCred(pr.Out.Header, fw.forms, fw.cred)
	if fw.answers != 0 {
		pr.Out.Header.Del("Accept-Encoding") // the transport asks for gzip and decodes it
	}
}

// errNotSent is the answer of send to a request whose URL left its upstream base.
var errNotSent = errors.New("blauth-proxy refused to send a request outside its upstream base")

// send is the last check before a request leaves: it goes only to the scheme and host of the
// base its route chose, under that base's path. Anything else is a bug of the proxy: it is
// logged and refused, never sent. A 401 heals once (retryRefused); only a request whose token
// can be healed has its body held for that.
func (s *Server) send(req *http.Request) (*http.Response, error) {
	fw := forwardOf(req.Context())
	if fw == nil || !fw.base.holds(req.URL) {
		base := "no route"
		if fw != nil {
			base = fw.base.String()
		}
		s.logf("blauth-proxy bug: refusing to send to %s (the upstream base is %s)", s.redact(withoutSecrets(req.URL), false), base)
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errNotSent
	}
	if fw.cred.Expiry.IsZero() {
		return s.transport.RoundTrip(req)
	}
	if err := holdBody(req); err != nil {
		return nil, err
	}
	resp, err := s.transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	return retryRefused(s.tokens, &fw.cred, fw.forms, req, resp, s.transport.RoundTrip)
}

// modifyResponse points a redirect within the upstream base back at the proxy, so that a client
// that follows it stays on the proxy, and rewrites the run URLs of an answer about sandboxes.
func (s *Server) modifyResponse(resp *http.Response) error {
	fw := forwardOf(resp.Request.Context()) // not nil: send sent the request
	if loc := resp.Header.Get("Location"); loc != "" {
		resp.Header.Set("Location", rewriteLocation(loc, &fw.target, fw.base.raw, fw.prefix))
	}
	if fw.answers != 0 {
		return rewriteAnswer(resp, fw.answers)
	}
	return nil
}

// upstreamError answers a request that got no answer upstream (or that send refused) with 502.
func (s *Server) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errNotSent) {
		plain(w, http.StatusBadGateway, "blauth-proxy: refused to send the request: its upstream URL left the upstream base (a bug of blauth-proxy, logged)")
		return
	}
	if r.Context().Err() != nil {
		return // the client went away; nothing to tell it
	}
	host := ""
	if fw := forwardOf(r.Context()); fw != nil {
		host = fw.target.Host
	}
	s.logf("%s %s: the upstream %s did not answer: %v", r.Method, s.redact(r.URL.EscapedPath(), false), host, err)
	plain(w, http.StatusBadGateway, fmt.Sprintf("blauth-proxy: the upstream %s did not answer: %v", host, err))
}

// serverError counts a line of http.Server's error log in the summary: a peer without the
// secret can cause one per connection. A panic is written at once.
func (s *Server) serverError(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if strings.HasPrefix(msg, "http: panic serving") {
		s.logf("%s", msg)
		return
	}
	s.refusals.add(serverError, msg)
}

// redact makes what a client sent fit for the log: the secret, if the client put it there,
// replaced (escaped or not); the query dropped when noQuery; at most 200 characters, no
// control characters.
func (s *Server) redact(v string, noQuery bool) string {
	if noQuery {
		v, _, _ = strings.Cut(v, "?")
	}
	sec := s.secret.Value()
	v = strings.ReplaceAll(v, sec, "[secret]")
	if dec, err := url.PathUnescape(v); err == nil && strings.Contains(dec, sec) {
		return "[a path that holds the secret, escaped]"
	}
	return ipc.Clip(v, 200)
}

// roundTripFunc is a function as an http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// copyBuffers are the buffers answers are copied through, shared by every request. The pool
// holds array pointers, so that putting a buffer back allocates nothing.
var copyBuffers = &bufferPool{sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}

const copyBufferSize = 32 << 10

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte { return b.p.Get().(*[copyBufferSize]byte)[:] }
func (b *bufferPool) Put(s []byte) {
	if cap(s) >= copyBufferSize {
		b.p.Put((*[copyBufferSize]byte)(s[:copyBufferSize]))
	}
}

// credForms are credential header forms, bit i for credHeaders[i].
type credForms uint8

// allCredForms is every form: what the MCP bridge sends.
const allCredForms credForms = 1<<len(credHeaders) - 1

// admit checks the request's credentials: every credential header it sends must be exactly one
// "Bearer <secret>", and at least one must be there. It returns the forms used, or what is
// wrong, never echoing what was sent.
func (s *Server) admit(h http.Header) (forms credForms, problem string) {
	for i, name := range credHeaders {
		vals := h.Values(name)
		switch {
		case len(vals) == 0:
			continue
		case len(vals) > 1:
			return 0, name + " is sent more than once"
		case !s.secret.matches(vals[0]):
			return 0, name + " does not carry this run's secret (the proxy accepts only the BL_API_KEY it gave the command it runs)"
		}
		forms |= 1 << i
	}
	if forms == 0 {
		return 0, "no credential: send the BL_API_KEY that blauth-helper exec --proxy gave your command, as Authorization: Bearer … or X-Blaxel-Authorization: Bearer …"
	}
	return forms, ""
}

// rewriteLocation maps a Location under the upstream base (absolute, or relative to the request
// sent upstream) to the same place under the proxy's prefix, as a path-absolute reference; any
// other Location is left as it is.
func rewriteLocation(loc string, sent *url.URL, base, prefix string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return loc
	}
	b, err := url.Parse(base)
	if err != nil {
		return loc
	}
	abs := sent.ResolveReference(u)
	basePath := strings.TrimRight(b.EscapedPath(), "/")
	p := abs.EscapedPath()
	if abs.Scheme != b.Scheme || abs.Host != b.Host || (p != basePath && !strings.HasPrefix(p, basePath+"/")) {
		return loc
	}
	out := prefix + strings.TrimPrefix(p, basePath)
	if abs.RawQuery != "" {
		out += "?" + abs.RawQuery
	}
	if abs.Fragment != "" {
		out += "#" + abs.EscapedFragment()
	}
	return out
}

func plain(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, msg)
}

// logfWriter turns a standard logger's output into logf lines.
type logfWriter func(format string, a ...any)

func (f logfWriter) Write(p []byte) (int, error) {
	f("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
