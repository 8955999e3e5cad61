// Package daemon is blauthd: it builds the parts (the sources and their resolver, the token
// broker, the device logins, the socket server) from a Config, runs them under one context, and
// reacts to their events: a source changed (keep the credentials it holds fresh, wake the
// watchers), a credential was refused (read the sources again), a reload (SIGHUP), the tick that
// judges expiry on the wall clock. cmd/blauthd only parses flags and calls Run.
package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon/internal/broker"
	"github.com/blauth/blauth/daemon/internal/login"
	"github.com/blauth/blauth/daemon/internal/resolver"
	"github.com/blauth/blauth/daemon/internal/server"
	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/internal/systemd"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/blconfig"
	"github.com/blauth/blauth/sources/watch"
)

// drainTimeout bounds how long a stopping daemon waits for requests in flight.
const drainTimeout = 10 * time.Second

// Daemon is a running blauthd. Build it with New, start it with Run.
type Daemon struct {
	cfg      Config
	log      zerolog.Logger
	ln       net.Listener
	releases []func() // the socket locks of the sockets the daemon made
	socket   string
	broker   *broker.Broker
	resolver *resolver.Resolver
	watcher  *watch.Watcher
	scoped   []net.Listener   // the scoped sockets, in ScopedSockets' order
	servers  []*server.Server // the daemon's socket first, then the scoped ones
	metrics  net.Listener     // GET /metrics (metrics.go), when MetricsListen asks for it
	stats    server.Stats     // what the servers did, for metrics

	// life is the context of work that must outlive a stop signal until in-flight requests are
	// answered: exchanges, device logins. Run cancels it last.
	life     context.Context
	stopLife context.CancelFunc

	mu      sync.Mutex
	stopRun context.CancelFunc // ends Run: action=stop
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
	d := &Daemon{cfg: cfg, log: cfg.Log, ln: cfg.Listener}
	if err := d.listen(); err != nil {
		return nil, err
	}
	if cfg.KeyringOff != "" { // said once, at start
		d.log.Info().Str("reason", cfg.KeyringOff).
			Msg("OS keyring off: secrets saved with blauth-helper login --api-key are not read; every other source is")
	}
	d.life, d.stopLife = context.WithCancel(context.WithoutCancel(ctx))
	w, err := watch.New(cfg.Log.With().Str("component", "watcher").Logger(), 0)
	if err != nil {
		d.log.Warn().Err(err).Msg("file watching unavailable; sources are re-read on reload only")
	}
	d.watcher = w
	d.broker = broker.New(d.life, broker.Config{
		Tokens:      cfg.Tokens,
		Clock:       cfg.Clock,
		Log:         cfg.Log.With().Str("component", "broker").Logger(),
		RefreshLeft: cfg.RefreshLeft,
		MinTTL:      cfg.MinTTL,
		Persist:     d.persist,
		OnAlert:     d.alerts(),
	})
	d.resolver = resolver.New(d.life, resolver.Config{
		Environ:      cfg.Environ,
		BLConfigPath: cfg.BLConfigPath,
		Keyring:      cfg.Keyring,
		Watcher:      w,
		Clock:        cfg.Clock,
		Log:          cfg.Log.With().Str("component", "sources").Logger(),

		ConfigFile: cfg.ConfigFile, ConfigFileOptional: cfg.ConfigFileOptional,
	})
	d.prime()
	sc := d.serverConfig()
	d.servers = []*server.Server{server.New(d.ln, sc)}
	for i, s := range cfg.ScopedSockets {
		scoped := sc
		scoped.Scope = server.NewScope(s.Workspaces)
		scoped.MaxConns, scoped.MaxWatchers = s.MaxConns, s.MaxWatchers
		d.servers = append(d.servers, server.New(d.scoped[i], scoped))
	}
	return d, nil
}

// listen makes the daemon's socket (unless the service manager passed it), the scoped ones and
// the metrics listener, before any source is read: an address in use fails the start at once.
func (d *Daemon) listen() error {
	if d.ln != nil {
		d.socket = d.ln.Addr().String()
	} else {
		ln, release, err := server.Listen(d.cfg.SocketPath)
		if err != nil {
			return err
		}
		d.ln, d.socket = ln, d.cfg.SocketPath
		d.releases = append(d.releases, release)
	}
	for _, s := range d.cfg.ScopedSockets {
		ln, release, err := server.Listen(s.Path)
		if err != nil {
			d.closeListeners()
			return fmt.Errorf("scoped socket: %w", err)
		}
		d.scoped = append(d.scoped, ln)
		d.releases = append(d.releases, release)
	}
	if d.cfg.MetricsListen != "" {
		if err := d.listenMetrics(); err != nil {
			d.closeListeners()
			return err
		}
	}
	return nil
}

// closeListeners closes every socket the daemon made, when it cannot start after all.
func (d *Daemon) closeListeners() {
	if d.cfg.Listener == nil && d.ln != nil {
		d.ln.Close()
	}
	for _, ln := range d.scoped {
		ln.Close()
	}
	for _, r := range d.releases {
		r()
	}
}

// serverConfig is what the socket server serves.
func (d *Daemon) serverConfig() server.Config {
	cfg := d.cfg
	sc := server.Config{
		Log: cfg.Log, Resolver: d.resolver, Broker: d.broker, Keyring: cfg.Keyring, KeyringOff: cfg.KeyringOff, BLConfigPath: cfg.BLConfigPath,
		Clock: cfg.Clock, Version: cfg.Version, Manager: cfg.Manager, Started: cfg.Clock.Now(),
		Reload: d.reload, Stop: d.stop, Stats: &d.stats,
		RequestTimeout: cfg.RequestTimeout, IdleTimeout: cfg.IdleTimeout, WatchWriteTimeout: cfg.WatchWriteTimeout,
		MaxConns: cfg.MaxConns, MaxWatchers: cfg.MaxWatchers, RunDomains: cfg.RunDomains,
	}
	if cfg.BLConfigPath != "" {
		sc.Logins = login.New(d.life, login.Config{Tokens: cfg.Tokens, Save: d.saveLogin, Log: cfg.Log.With().Str("component", "login").Logger()})
	}
	return sc
}

// MetricsAddr is the address metrics are served on, or "" when they are not.
func (d *Daemon) MetricsAddr() string {
	if d.metrics == nil {
		return ""
	}
	return d.metrics.Addr().String()
}

// Socket is the path (or address) the daemon serves.
func (d *Daemon) Socket() string { return d.socket }

// Broker is the daemon's token broker.
func (d *Daemon) Broker() *broker.Broker { return d.broker }

// Run serves until ctx is done.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.mu.Lock()
	d.stopRun = cancel
	d.mu.Unlock()
	var bg sync.WaitGroup
	if d.watcher != nil {
		bg.Go(func() { _ = d.watcher.Run(ctx) })
	}
	bg.Go(func() { d.events(ctx) })
	bg.Go(func() { _ = systemd.RunWatchdog(ctx) })
	if d.metrics != nil {
		bg.Go(func() { d.serveMetrics(ctx) })
	}
	d.log.Info().Str("socket", d.socket).Str("version", d.cfg.Version).Int("pid", os.Getpid()).Msg("blauthd serving")
	for _, s := range d.cfg.ScopedSockets {
		d.log.Info().Str("socket", s.Path).Strs("workspaces", s.Workspaces).Msg("scoped socket serving")
	}
	if d.cfg.Ready != nil {
		d.cfg.Ready(d.socket)
	}
	_ = systemd.Ready()
	stopping := make(chan struct{})
	go func() {
		<-ctx.Done()
		_ = systemd.Stopping()
		d.log.Info().Msg("stopping: finishing requests in flight")
		close(stopping)
	}()
	errs := make(chan error, len(d.servers))
	for _, s := range d.servers {
		go func() { errs <- s.Serve(ctx, d.life, drainTimeout) }()
	}
	var err error
	for range d.servers {
		if e := <-errs; e != nil && err == nil {
			err = e
			cancel() // one socket failing stops the daemon: a supervisor restarts it whole
		}
	}
	cancel()
	<-stopping
	d.stopLife()
	bg.Wait()
	d.broker.Wait()
	d.resolver.Close()
	for _, r := range d.releases {
		r()
	}
	d.log.Info().Msg("blauthd stopped")
	return err
}

// stop ends Run, as a signal would (action=stop).
func (d *Daemon) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopRun != nil {
		d.stopRun()
	}
}

// events is the daemon's loop: it reacts to what the parts announce, and ticks.
func (d *Daemon) events(ctx context.Context) {
	t := time.NewTicker(d.cfg.Tick)
	defer t.Stop()
	changed, refused := d.resolver.Changed(), d.broker.Refused()
	for sweep := 1; ; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.broker.Tick()
			if sweep++; sweep%60 == 0 {
				d.resolver.Sweep()
			}
		case <-changed:
			// A source changed: the credentials it holds are the ones to keep fresh now.
			changed = d.resolver.Changed()
			d.prime()
		case <-refused:
			// A refused credential may have been replaced in its source since it was read (bl
			// logged in again): read the sources once more.
			refused = d.broker.Refused()
			d.resolver.Reload(d.life)
		case <-d.cfg.Reload:
			d.reload(ctx)
		}
	}
}

// reload re-reads every source (SIGHUP, action=reload).
func (d *Daemon) reload(ctx context.Context) {
	_ = systemd.Reloading()
	d.log.Info().Msg("reloading sources")
	d.resolver.Reload(ctx)
	d.prime()
	_ = systemd.Ready()
}

// prime registers every credential the daemon holds itself (its environment, the keyring, the
// bl config) with the broker, so their tokens are kept fresh before anyone asks.
func (d *Daemon) prime() {
	held := map[string]bool{}
	for _, ws := range d.resolver.Workspaces() {
		res, err := d.resolver.Resolve(resolver.Request{Workspace: ws})
		if err == nil && res.DaemonHeld() {
			d.broker.Track(res.Credential)
			held[res.Credential.Key()] = true
		}
	}
	d.broker.Untrack(func(k string) bool { return held[k] })
}

// persist writes a refreshed bl login session back to the bl config, as bl would.
func (d *Daemon) persist(c *sources.Credential, t *token.Token) (bool, error) {
	if !d.cfg.WriteBack || c.Source.Kind != sources.SourceBLConfig || d.cfg.BLConfigPath == "" {
		return false, nil
	}
	saved := true
	err := blconfig.Update(d.cfg.BLConfigPath, c.Workspace, func(cr *blconfig.Credentials) {
		if cr.RefreshToken != "" && cr.RefreshToken != c.RefreshToken {
			// bl logged in again since we read the file: its session is newer than ours.
			saved = false
			return
		}
		cr.AccessToken, cr.RefreshToken, cr.ExpiresIn = t.AccessToken, t.RefreshToken, expiresIn(t)
	})
	return saved && err == nil, err
}

// saveLogin saves a device login's session in the bl config, as bl login does.
func (d *Daemon) saveLogin(workspace, deviceCode string, t *token.Token) error {
	err := blconfig.Update(d.cfg.BLConfigPath, workspace, func(cr *blconfig.Credentials) {
		*cr = blconfig.Credentials{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, ExpiresIn: expiresIn(t), DeviceCode: deviceCode}
	})
	if err == nil {
		d.resolver.Reload(d.life)
	}
	return err
}

// expiresIn is the expires_in bl writes: the endpoint's, or the token's lifetime.
func expiresIn(t *token.Token) int {
	if t.ExpiresIn > 0 {
		return t.ExpiresIn
	}
	return int(t.Lifetime().Seconds())
}
