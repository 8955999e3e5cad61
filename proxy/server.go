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
var credHeaders = []string{"Authorization", "X-Blaxel-Authorization"}

// Config describes a Server.
type Config struct {
	Tokens *Tokens // where tokens come from
	Secret Secret  // what every request must carry
	// RunURL is BL_RUN_URL from the environment blauth-proxy was started with ("" when unset):
	// see RunBase.
	RunURL string
	// Transport sends requests upstream; nil is a clone of http.DefaultTransport (TLS verified,
	// HTTPS_PROXY honoured) that keeps up to 64 idle connections per host.
	Transport http.RoundTripper
	// Logf receives one line per refused request and per upstream failure; nil discards them.
	Logf func(format string, a ...any)
}

// Server is the injecting reverse proxy. It is an http.Handler, safe for concurrent use.
type Server struct {
	tokens    *Tokens
	secret    Secret
	runBase   string // the run base BL_RUN_URL names, checked once; "" to follow each token's API base
	transport http.RoundTripper
	logf      func(format string, a ...any)
	errLog    *log.Logger
}

// NewServer checks cfg and returns the proxy.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Tokens == nil {
		return nil, errors.New("proxy: no token source")
	}
	if len(cfg.Secret.b) == 0 {
		return nil, errors.New("proxy: no secret")
	}
	s := &Server{tokens: cfg.Tokens, secret: cfg.Secret, transport: cfg.Transport, logf: cfg.Logf}
	if cfg.RunURL != "" {
		base, err := RunBase("", cfg.RunURL)
		if err != nil {
			return nil, err
		}
		s.runBase = base
	}
	if s.transport == nil {
		s.transport = DefaultTransport()
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	s.errLog = log.New(logfWriter(s.logf), "", 0)
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
// flight included.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: s.errLog}
	stop := context.AfterFunc(ctx, func() { hs.Close() })
	defer stop()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ServeHTTP admits a request that carries the secret, picks its upstream by prefix, and
// forwards it with the current token in place of the secret.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	forms, problem := s.admit(r.Header)
	if problem != "" {
		s.logf("refused %s %s from %s: %s", r.Method, ipc.Clip(r.URL.Path, 200), r.RemoteAddr, problem)
		w.Header().Set("WWW-Authenticate", `Bearer realm="blauth-proxy"`)
		plain(w, http.StatusUnauthorized, "blauth-proxy: refused: "+problem)
		return
	}
	var prefix string
	switch p := r.URL.Path; {
	case p == APIPrefix || strings.HasPrefix(p, APIPrefix+"/"):
		prefix = APIPrefix
	case p == RunPrefix || strings.HasPrefix(p, RunPrefix+"/"):
		prefix = RunPrefix
	default:
		plain(w, http.StatusNotFound, "blauth-proxy: no such path: it forwards "+APIPrefix+"/… to the Blaxel API ($BL_API_URL) and "+RunPrefix+"/… to run hosts ($BL_RUN_URL)")
		return
	}
	if hasDotSegment(r.URL.Path) {
		plain(w, http.StatusBadRequest, "blauth-proxy: a path with . or .. segments is not forwarded")
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
	base := cred.APIURL
	if prefix == RunPrefix {
		base = s.runBase
		if base == "" {
			base, err = RunBase(cred.APIURL, "")
		}
	} else if base == "" {
		err = errors.New("blauthd named no API base (api_url) for the token: it is older than this proxy; restart it")
	}
	if err != nil {
		plain(w, http.StatusBadGateway, "blauth-proxy: "+err.Error())
		return
	}
	target, err := url.Parse(strings.TrimRight(base, "/") + strings.TrimPrefix(r.URL.EscapedPath(), prefix))
	if err != nil {
		plain(w, http.StatusBadRequest, "blauth-proxy: cannot form the upstream URL: "+err.Error())
		return
	}
	target.RawQuery = r.URL.RawQuery
	// An HTTP/1 handler otherwise reads the rest of the request body before answering: a client
	// that streams its request while reading the answer would wait for ever.
	_ = http.NewResponseController(w).EnableFullDuplex()
	s.reverseProxy(target, base, prefix, forms, cred).ServeHTTP(w, r)
}

// reverseProxy forwards to target with cred's token in every credential header form the client
// used (forms) and the workspace named.
func (s *Server) reverseProxy(target *url.URL, base, prefix string, forms []string, cred Credential) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		// Rewrite (not Director): the hop-by-hop and X-Forwarded-* headers are gone before it
		// runs, and none is added: the upstream learns nothing about the local client.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = ""
			for _, h := range credHeaders {
				pr.Out.Header.Del(h)
			}
			for _, h := range forms {
				pr.Out.Header.Set(h, "Bearer "+cred.Token)
			}
			pr.Out.Header.Set("X-Blaxel-Workspace", cred.Workspace)
		},
		// A redirect within the upstream base is pointed back at the proxy, so that a client that
		// follows it stays on the proxy.
		ModifyResponse: func(resp *http.Response) error {
			if loc := resp.Header.Get("Location"); loc != "" {
				resp.Header.Set("Location", rewriteLocation(loc, target, base, prefix))
			}
			return nil
		},
		Transport:     s.transport,
		BufferPool:    copyBuffers,
		FlushInterval: -1, // every write of the upstream reaches the client at once (SSE, logs)
		ErrorLog:      s.errLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away; nothing to tell it
			}
			s.logf("%s %s%s: the upstream %s did not answer: %v", r.Method, prefix, ipc.Clip(r.URL.Path, 200), target.Host, err)
			plain(w, http.StatusBadGateway, fmt.Sprintf("blauth-proxy: the upstream %s did not answer: %v", target.Host, err))
		},
	}
}

// copyBuffers are the buffers answers are copied through, shared by every request.
var copyBuffers = &bufferPool{sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(s []byte) { b.p.Put(&s) }

// admit checks the request's credentials: every credential header it sends must be exactly one
// "Bearer <secret>", and at least one must be there. It returns the forms used, or what is
// wrong, never echoing what was sent.
func (s *Server) admit(h http.Header) (forms []string, problem string) {
	for _, name := range credHeaders {
		vals := h.Values(name)
		switch {
		case len(vals) == 0:
			continue
		case len(vals) > 1:
			return nil, name + " is sent more than once"
		case !s.secret.matches(vals[0]):
			return nil, name + " does not carry this run's secret (the proxy accepts only the BL_API_KEY it gave the command it runs)"
		}
		forms = append(forms, name)
	}
	if len(forms) == 0 {
		return nil, "no credential: send the BL_API_KEY that blauth-helper exec --proxy gave your command, as Authorization: Bearer … or X-Blaxel-Authorization: Bearer …"
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

func hasDotSegment(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
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
