// Package daemon is blauthd: it listens on the Unix socket, checks every peer, resolves which
// credential serves each request (package sources), and keeps one fresh token per credential in
// its Broker. Run is the whole daemon; cmd/blauthd only parses flags and calls it.
package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/internal/notify"
	"github.com/blauth/blauth/internal/systemd"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// Daemon is a running blauthd. Build it with New, start it with Run.
type Daemon struct {
	cfg      Config
	log      zerolog.Logger
	ln       net.Listener
	lock     *socketLock
	socket   string
	broker   *Broker
	resolver *sources.Resolver
	watcher  *sources.Watcher
	uid      int
	started  time.Time

	// life is the context of work that must outlive a stop signal until in-flight requests are
	// answered: exchanges, device logins. Run cancels it last.
	life     context.Context
	stopLife context.CancelFunc

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	active  sync.WaitGroup
	login   *loginFlows
	stopRun context.CancelFunc // ends Run: action=stop
	// changed is announced when a source changed or was re-read: watchers look again.
	changed notify.Broadcast
}

// Run runs the daemon until ctx is cancelled: it serves the socket, reloads on cfg.Reload, and
// on cancellation stops accepting, lets in-flight requests finish, and removes its socket.
func Run(ctx context.Context, cfg Config) error {
	d, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// New validates cfg, opens the socket and reads the sources; nothing is served until Run.
func New(ctx context.Context, cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: cfg.Log, uid: os.Getuid(), conns: map[net.Conn]struct{}{}, started: cfg.Clock.Now()}
	d.life, d.stopLife = context.WithCancel(context.WithoutCancel(ctx))
	if cfg.Listener != nil {
		d.ln = cfg.Listener
		d.socket = cfg.Listener.Addr().String()
	} else {
		ln, lock, err := listenUnix(cfg.SocketPath)
		if err != nil {
			return nil, err
		}
		d.ln, d.lock, d.socket = ln, lock, cfg.SocketPath
	}
	w, err := sources.NewWatcher(cfg.Log.With().Str("component", "watcher").Logger(), 0)
	if err != nil {
		d.log.Warn().Err(err).Msg("file watching unavailable; sources are re-read on reload only")
	}
	d.watcher = w
	d.broker = NewBroker(d.life, BrokerConfig{
		Exchanger:   cfg.Exchanger,
		Clock:       cfg.Clock,
		Log:         cfg.Log.With().Str("component", "broker").Logger(),
		RefreshLeft: cfg.RefreshLeft,
		MinTTL:      cfg.MinTTL,
		Persist:     d.persist,
		OnPermanent: func(c *sources.Credential) { d.resolver.Reload(d.life) },
	})
	d.resolver = sources.NewResolver(d.life, sources.ResolverConfig{
		Environ:      cfg.Environ,
		BLConfigPath: cfg.BLConfigPath,
		Keyring:      cfg.Keyring,
		Watcher:      w,
		Log:          cfg.Log.With().Str("component", "sources").Logger(),
		OnChange: func(kind string) {
			d.log.Debug().Str("source", kind).Msg("source changed")
			if kind != sources.SourceDotenv {
				d.prime()
			}
			d.changed.Notify()
		},
	})
	d.prime()
	d.login = newLoginFlows(d)
	return d, nil
}

// Socket is the path (or address) the daemon serves.
func (d *Daemon) Socket() string { return d.socket }

// Broker is the daemon's token broker.
func (d *Daemon) Broker() *Broker { return d.broker }

// Run serves until ctx is done.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.mu.Lock()
	d.stopRun = cancel
	d.mu.Unlock()
	var bg sync.WaitGroup
	if d.watcher != nil {
		bg.Add(1)
		go func() { defer bg.Done(); _ = d.watcher.Run(ctx) }()
	}
	bg.Add(1)
	go func() { defer bg.Done(); d.tick(ctx) }()
	bg.Add(1)
	go func() { defer bg.Done(); _ = systemd.RunWatchdog(ctx) }()

	d.log.Info().Str("socket", d.socket).Str("version", d.cfg.Version).Int("pid", os.Getpid()).Msg("blauthd serving")
	if d.cfg.Ready != nil {
		d.cfg.Ready(d.socket)
	}
	_ = systemd.Ready()

	errc := make(chan error, 1)
	go func() { errc <- d.accept(ctx) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	_ = systemd.Stopping()
	d.log.Info().Msg("stopping: finishing requests in flight")
	d.ln.Close()
	if err == nil {
		<-errc
	}
	d.closeIdle()
	done := make(chan struct{})
	go func() { d.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.log.Warn().Msg("requests still running after 10s; leaving them")
	}
	cancel()
	d.stopLife()
	bg.Wait()
	d.broker.Wait()
	d.resolver.Close()
	if d.lock != nil {
		d.lock.release()
	}
	d.log.Info().Msg("blauthd stopped")
	return err
}

// prime registers every credential the daemon holds itself (its environment, the keyring, the
// bl config) with the broker, so their tokens are kept fresh before anyone asks.
func (d *Daemon) prime() {
	if d.resolver == nil {
		return // still being built; New primes once it is
	}
	held := map[string]bool{}
	for _, ws := range d.resolver.Workspaces() {
		res, err := d.resolver.Resolve(sources.Request{Workspace: ws})
		if err == nil && res.DaemonHeld() {
			d.broker.Track(res.Credential)
			held[res.Credential.Key()] = true
		}
	}
	d.broker.Untrack(func(k string) bool { return held[k] })
}

func (d *Daemon) tick(ctx context.Context) {
	t := time.NewTicker(d.cfg.Tick)
	defer t.Stop()
	sweep := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.broker.Tick()
			if sweep++; sweep%60 == 0 {
				d.resolver.Sweep()
			}
		case <-d.cfg.Reload:
			d.reload(ctx)
		}
	}
}

func (d *Daemon) reload(ctx context.Context) {
	_ = systemd.Reloading()
	d.log.Info().Msg("reloading sources")
	d.resolver.Reload(ctx)
	d.prime()
	d.changed.Notify()
	_ = systemd.Ready()
}

func (d *Daemon) accept(ctx context.Context) error {
	var delay time.Duration
	for {
		c, err := d.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and friends: back off instead of spinning.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			d.log.Error().Err(err).Dur("retry_in", delay).Msg("accept failed")
			time.Sleep(delay)
			continue
		}
		delay = 0
		d.mu.Lock()
		full := len(d.conns) >= d.cfg.MaxConns
		if !full {
			d.conns[c] = struct{}{}
			d.active.Add(1)
		}
		d.mu.Unlock()
		if full {
			d.log.Warn().Int("max", d.cfg.MaxConns).Msg("too many connections; refusing a new one")
			go refuse(c, fail(ipc.CodeBusy, fmt.Sprintf("blauthd already serves %d connections", d.cfg.MaxConns), "retry in a moment; close connections you no longer use"))
			continue
		}
		go d.serveConn(ctx, c)
	}
}

// closeIdle wakes every connection blocked waiting for its next request, so it ends; a request
// being handled still gets its answer.
func (d *Daemon) closeIdle() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		_ = c.SetReadDeadline(time.Now())
	}
}

func (d *Daemon) serveConn(ctx context.Context, c net.Conn) {
	defer func() {
		c.Close()
		d.mu.Lock()
		delete(d.conns, c)
		d.mu.Unlock()
		d.active.Done()
	}()
	if uid, err := peerUID(c); err != nil || uid != d.uid {
		d.log.Warn().Int("peer_uid", uid).Err(err).Msg("refused a connection from another user")
		refuse(c, fail(ipc.CodeForbidden, "this daemon serves only its own user", ""))
		return
	}
	r := bufio.NewReaderSize(c, 4096)
	for ctx.Err() == nil {
		_ = c.SetReadDeadline(time.Now().Add(d.cfg.IdleTimeout))
		if _, err := r.Peek(1); err != nil {
			return
		}
		// One deadline bounds reading the rest of the request, handling it, and writing the
		// answer: the read must finish within RequestTimeout, and a get waits at most
		// ipc.GetBudget for an exchange.
		_ = c.SetDeadline(time.Now().Add(d.cfg.RequestTimeout + ipc.GetBudget + 5*time.Second))
		_ = c.SetReadDeadline(time.Now().Add(d.cfg.RequestTimeout))
		req, err := ipc.ReadMessage(r)
		if err != nil {
			// Every request that began gets an answer, even one the stream cannot carry on
			// after: the connection is closed once it is written.
			var msg string
			switch {
			case errors.Is(err, ipc.ErrTooLarge) || errors.Is(err, ipc.ErrMalformed):
				msg = err.Error()
			case errors.Is(err, io.ErrUnexpectedEOF):
				msg = "the request ended before its empty line"
			case errors.Is(err, os.ErrDeadlineExceeded):
				msg = fmt.Sprintf("the request was not complete within %s of its first byte", d.cfg.RequestTimeout)
			default:
				return
			}
			d.log.Debug().Err(err).Msg("bad request")
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_ = ipc.WriteAnswer(c, fail(ipc.CodeBadRequest, msg, "end every request with an empty line; see docs/PROTOCOL.md"))
			return
		}
		if req.Value(ipc.KeyAction) == ipc.ActionWatch {
			d.serveWatch(ctx, c, r, req)
			return
		}
		resp := d.handle(d.life, req)
		if err := ipc.WriteAnswer(c, resp); err != nil {
			d.log.Debug().Err(err).Msg("write answer")
			return
		}
		if req.Value(ipc.KeyAction) == ipc.ActionStop && ipc.AsError(resp) == nil {
			d.log.Info().Msg("stop requested by a client")
			d.mu.Lock()
			d.stopRun()
			d.mu.Unlock()
			return
		}
	}
}

// refuse answers a connection that will not be served with one error, then closes it. It lets
// the peer finish sending first, so that the peer reads the answer rather than a broken pipe;
// what it sends is discarded, bounded by a deadline and a small cap.
func refuse(c net.Conn, answer *ipc.Message) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	_ = ipc.WriteAnswer(c, answer)
	if uc, ok := c.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
		_, _ = io.CopyN(io.Discard, c, ipc.MaxMessageSize)
	}
}

func fail(code, msg, hint string) *ipc.Message {
	return ipc.ErrorMessage(&ipc.Error{Code: code, Message: msg, Hint: hint})
}

func ok(kv ...string) *ipc.Message {
	return ipc.NewMessage(append([]string{ipc.KeyVersion, ipc.Version, ipc.KeyStatus, ipc.StatusOK}, kv...)...)
}

// handle answers one request. It never panics the daemon: a bug in one request is logged and
// answered as internal.
func (d *Daemon) handle(ctx context.Context, req *ipc.Message) (resp *ipc.Message) {
	defer func() {
		if p := recover(); p != nil {
			d.log.Error().Interface("panic", p).Msg("request handler panicked")
			resp = fail(ipc.CodeInternal, "internal error", "")
		}
	}()
	v, good := ipc.ParseVersion(req.Get(ipc.KeyVersion))
	if !good {
		return fail(ipc.CodeUnsupportedVersion, fmt.Sprintf("protocol version %q is not a version number; this daemon speaks 1 to %s", clip(req.Value(ipc.KeyVersion), 20), ipc.Version), "upgrade blauth-helper or the client library")
	}
	defer func() {
		// The answer is in the version both sides speak.
		resp.Set(ipc.KeyVersion, strconv.Itoa(min(v, ipc.VersionNumber)))
	}()
	if r := validateRequest(req); r != nil {
		return r
	}
	switch a := req.Value(ipc.KeyAction); a {
	case ipc.ActionGet:
		resp, _ := d.get(ctx, req)
		return resp
	case ipc.ActionErase:
		return d.erase(req)
	case ipc.ActionStatus:
		return d.status(req, v)
	case ipc.ActionPing:
		return ok(ipc.KeyPID, strconv.Itoa(os.Getpid()), ipc.KeyDaemonVersion, d.cfg.Version, ipc.KeyManager, d.cfg.Manager)
	case ipc.ActionStop:
		if v < 2 {
			return fail(ipc.CodeUnknownAction, "stop needs protocol version 2", "send version=2")
		}
		return ok(ipc.KeyPID, strconv.Itoa(os.Getpid()), ipc.KeyManager, d.cfg.Manager)
	case ipc.ActionReload:
		d.reload(ctx)
		return ok()
	case ipc.ActionKeyringSet, ipc.ActionKeyringDelete:
		return d.keyring(ctx, req)
	case ipc.ActionLoginStart:
		return d.login.start(ctx, req)
	case ipc.ActionLoginWait:
		return d.login.wait(ctx, req)
	case "":
		return fail(ipc.CodeBadRequest, "the request has no action", "send action=get")
	default:
		return fail(ipc.CodeUnknownAction, fmt.Sprintf("unknown action %q", clip(a, 40)), "")
	}
}

// maxCwd bounds the cwd= a request may carry: the longest path Linux resolves.
const maxCwd = 4096

// validateRequest refuses the common request keys a caller got wrong, rather than ignoring them
// and serving another workspace's token.
func validateRequest(req *ipc.Message) *ipc.Message {
	if dir, ok := req.Get(ipc.KeyDir); ok {
		switch {
		case dir == "" || !filepath.IsAbs(dir):
			return fail(ipc.CodeBadRequest, fmt.Sprintf("cwd %q is not an absolute path", clip(dir, 200)), "send the caller's working directory as an absolute path, or no cwd at all")
		case len(dir) > maxCwd:
			return fail(ipc.CodeBadRequest, fmt.Sprintf("cwd is %d bytes long, over the %d a path may have", len(dir), maxCwd), "")
		}
	}
	return nil
}

// sourceRequest reads the caller's workspace, directory and BL_* variables.
func sourceRequest(req *ipc.Message) sources.Request {
	r := sources.Request{Workspace: req.Value(ipc.KeyWorkspace), Dir: req.Value(ipc.KeyDir)}
	for _, f := range req.Fields {
		if name, ok := strings.CutPrefix(f.Key, ipc.KeyEnvPrefix); ok && strings.HasPrefix(name, "BL_") {
			if r.Env == nil {
				r.Env = map[string]string{}
			}
			r.Env[name] = f.Value
		}
	}
	return r
}

// resolveError answers a resolution that found nothing to serve. A source that could not be
// read is often the cause (a broken bl config hides its workspaces), so each is named.
func resolveError(res *sources.Resolution, err error) *ipc.Message {
	msg := err.Error()
	var hint string
	var code string
	switch {
	case errors.Is(err, sources.ErrNoWorkspace):
		code, hint = ipc.CodeNoWorkspace, "pass a workspace (-w NAME), set BL_WORKSPACE, or run `bl login`"
	case errors.Is(err, sources.ErrNoCredentials):
		code, hint = ipc.CodeNoCredentials, "set BL_API_KEY or BL_CLIENT_CREDENTIALS, run `bl login WORKSPACE`, or `blauth-helper login WORKSPACE --api-key`"
	default:
		return fail(ipc.CodeInternal, msg, "")
	}
	if res != nil && len(res.Errors) > 0 {
		var b strings.Builder
		for i, e := range res.Errors {
			if i == 3 {
				fmt.Fprintf(&b, "; and %d more (blauth-helper status lists them)", len(res.Errors)-i)
				break
			}
			fmt.Fprintf(&b, "; %s %s could not be used: %s", e.Source.Kind, e.Source.Where, e.Error)
		}
		msg += b.String()
		hint = "fix the source named above (it may hold what you expected), or " + hint
	}
	return fail(code, msg, hint)
}

// get answers action=get, and says which credential it served (nil when none).
func (d *Daemon) get(ctx context.Context, req *ipc.Message) (*ipc.Message, *sources.Credential) {
	res, err := d.resolver.Resolve(sourceRequest(req))
	if err != nil {
		return resolveError(res, err), nil
	}
	var minTTL time.Duration
	if s := req.Value(ipc.KeyMinTTL); s != "" {
		n, err := parseSeconds(s)
		if err != nil {
			return fail(ipc.CodeBadRequest, "min_ttl must be a number of seconds", ""), nil
		}
		minTTL = n
	}
	c := res.Credential
	s, err := d.broker.Get(ctx, c, minTTL, res.DaemonHeld())
	if err != nil {
		var te *TokenError
		if errors.As(err, &te) {
			return fail(te.Code, te.Msg, te.Hint), c
		}
		return fail(ipc.CodeInternal, err.Error(), ""), c
	}
	t := ipc.Token{Workspace: res.Workspace, Token: s.Token, Kind: c.Kind, Source: c.Source.String(), Expiry: s.Expiry, Hint: s.Warning, APIURL: c.BaseURL}
	return t.Message(), c
}

func parseSeconds(s string) (time.Duration, error) {
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n < 0 || n > 1<<31 || fmt.Sprint(n) != s {
		return 0, errors.New("bad number")
	}
	return time.Duration(n) * time.Second, nil
}

func (d *Daemon) erase(req *ipc.Message) *ipc.Message {
	res, err := d.resolver.Resolve(sourceRequest(req))
	if err != nil {
		return resolveError(res, err)
	}
	dropped := d.broker.Erase(res.Credential, req.Value(ipc.KeyToken))
	d.log.Info().Str("workspace", res.Workspace).Bool("dropped", dropped).Msg("erase")
	return ok(ipc.KeyWorkspace, res.Workspace, ipc.KeyDropped, strconv.FormatBool(dropped))
}

func (d *Daemon) persist(c *sources.Credential, g *Grant) (bool, error) {
	if !d.cfg.WriteBack || c.Source.Kind != sources.SourceBLConfig || d.cfg.BLConfigPath == "" {
		return false, nil
	}
	saved := true
	err := sources.UpdateBLCredentials(d.cfg.BLConfigPath, c.Workspace, func(cr *sources.BLCredentials) {
		if cr.RefreshToken != "" && cr.RefreshToken != c.RefreshToken {
			// bl logged in again since we read the file: its session is newer than ours.
			saved = false
			return
		}
		cr.AccessToken = g.AccessToken
		cr.RefreshToken = g.RefreshToken
		if g.ExpiresIn > 0 {
			cr.ExpiresIn = g.ExpiresIn
		} else {
			cr.ExpiresIn = int(g.Lifetime().Seconds())
		}
	})
	return saved && err == nil, err
}
