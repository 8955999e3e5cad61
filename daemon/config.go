package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/blauth/blauth/daemon/internal/broker"
	"github.com/blauth/blauth/daemon/internal/server"
	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/internal/systemd"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources/keyring"
)

// Defaults of the settings a user may change.
const (
	DefaultMinTTL      = 30 * time.Second          // the least remaining life of a token served
	DefaultRefreshLeft = broker.DefaultRefreshLeft // the fraction of a token's life left at its refresh
)

// Default caps of each socket (docs/OPERATIONS.md shows that with every cap of the daemon's
// socket and of 16 scoped ones full, blauthd stays under its unit's MemoryMax=128M).
const (
	DefaultMaxConns          = 2048 // the daemon's own socket: connections, watchers included
	DefaultMaxWatchers       = 1024 // the daemon's own socket: watch streams
	DefaultScopedMaxConns    = 64   // each scoped socket
	DefaultScopedMaxWatchers = 32
	// MaxScopedSockets is how many scoped sockets one daemon serves, at most.
	MaxScopedSockets = 16
)

// ErrAlreadyRunning reports that another daemon serves the socket.
var ErrAlreadyRunning = server.ErrAlreadyRunning

// ErrInvalidConfig reports a setting the daemon refuses to start with.
var ErrInvalidConfig = errors.New("invalid setting")

// Config configures the daemon. Validate checks it; New fills the defaults of zero fields.
type Config struct {
	// SocketPath is where to listen when no socket is inherited from the service manager
	// (LISTEN_FDS): an absolute path short enough for a Unix socket.
	SocketPath string
	// Listener, when set, is served instead of creating SocketPath; the daemon does not remove
	// its file on exit, whoever made it owns it.
	Listener net.Listener
	// ScopedSockets are more sockets, each answering get and watch for some workspaces only, to
	// forward to a less trusted place (an SSH session, a container).
	ScopedSockets []ScopedSocket
	// MetricsListen, when set, serves GET /metrics (Prometheus text format) on this TCP
	// address; MetricsWorkspaces labels the per-token series with workspace names.
	MetricsListen     string
	MetricsWorkspaces bool
	Log               zerolog.Logger
	// Environ is the daemon's environment (os.Environ()).
	Environ []string
	// BLConfigPath is the bl CLI config ($HOME/.blaxel/config.yaml); empty disables it.
	BLConfigPath string
	// ConfigFile is blauth's own config file, whose routes: the daemon reads again whenever it
	// changes (its other keys are read once, at start, by whoever builds the Config); "" means
	// no routes. ConfigFileOptional: a missing file means no routes (the default path).
	ConfigFile         string
	ConfigFileOptional bool
	// NotifyCommand is run with /bin/sh -c, once per alert, when a credential can no longer be
	// refreshed (notify_command: in blauth's config file); "" runs nothing.
	NotifyCommand string
	// RunDomains are the run_domains: of blauth's config file, sent with every token
	// (ipc.KeyRunDomains) for blauth-proxy.
	RunDomains []string
	// WriteBack saves refreshed bl login sessions into BLConfigPath, as bl would.
	WriteBack bool
	// Keyring, when set, is a source and the store behind blauth-helper login. OSKeyring asks
	// for the OS keyring (time-boxed by KeyringTimeout) when Keyring is nil.
	Keyring        keyring.Store
	OSKeyring      bool
	KeyringTimeout time.Duration
	// KeyringOff says why the daemon runs without the OS keyring (a flag, BLAUTH_NO_KEYRING,
	// blauth's config file), when it does; New sets it when OSKeyring finds no session bus. It
	// is logged once at start and reported by status and ping.
	KeyringOff string
	// OAuth selects a standard RFC 6749 token endpoint instead of Blaxel's JSON dialect.
	OAuth OAuthSettings
	// Tokens talks to the token endpoint; nil means the one OAuth or Blaxel's dialect needs.
	Tokens token.Client
	// HTTP is the client for token endpoints when Tokens is nil or a *token.OAuth2 without one.
	HTTP *http.Client
	// Clock is the wall clock (tests inject one).
	Clock clock.Clock
	// RefreshLeft (0 < f < 1) and MinTTL tune the broker; zero means the default. See
	// broker.Config.
	RefreshLeft float64
	MinTTL      time.Duration
	// RequestTimeout bounds reading one request once its first byte came (5s).
	RequestTimeout time.Duration
	// IdleTimeout closes a connection that sends nothing for this long (2m).
	IdleTimeout time.Duration
	// MaxConns and MaxWatchers bound the daemon's own socket: its open connections, watchers
	// included (DefaultMaxConns), and its watch streams (DefaultMaxWatchers). Past either, a new
	// one is answered code busy. ScopedMaxConns and ScopedMaxWatchers are the same caps for each
	// scoped socket that sets none of its own (DefaultScopedMaxConns, DefaultScopedMaxWatchers).
	MaxConns, MaxWatchers             int
	ScopedMaxConns, ScopedMaxWatchers int
	// WatchWriteTimeout drops a watcher that does not read a message within it (10s).
	WatchWriteTimeout time.Duration
	// Tick is how often expiry and due refreshes are checked on the wall clock (1s).
	Tick time.Duration
	// Reload delivers reload requests (SIGHUP: see NotifyReload).
	Reload <-chan struct{}
	// Version is reported by ping and status.
	Version string
	// Ready, when set, is called once the socket accepts connections.
	Ready func(socket string)
	// Manager is what started the daemon, reported by ping and stop: ipc.ManagerSystemd,
	// ipc.ManagerSpawned, or ipc.ManagerForeground (the default; systemd when the socket is
	// inherited).
	Manager string
}

// ScopedSocket is a socket that serves only Workspaces (see server.Scope).
type ScopedSocket struct {
	Path       string
	Workspaces []string
	// MaxConns and MaxWatchers, when set, are this socket's caps instead of the Config's
	// ScopedMaxConns and ScopedMaxWatchers.
	MaxConns, MaxWatchers int
}

// OAuthSettings select and configure an RFC 6749 token endpoint (form-encoded, through
// golang.org/x/oauth2) for users whose Blaxel access goes through their own identity provider.
type OAuthSettings struct {
	Enabled  bool
	TokenURL string // the token endpoint; else Issuer's; else {base}/oauth/token
	Issuer   string // an OIDC issuer whose metadata names the token endpoint
	Auth     string // client authentication: basic (default), post or auto
	// ClientID and ClientSecret authenticate refresh-token grants ("blaxel" and none if empty).
	ClientID, ClientSecret string
}

// authStyles are the values of token-auth ("" is basic), and what each sends.
var authStyles = map[string]oauth2.AuthStyle{"": oauth2.AuthStyleInHeader, "basic": oauth2.AuthStyleInHeader,
	"post": oauth2.AuthStyleInParams, "auto": oauth2.AuthStyleAutoDetect}

// maxSocketPath is the longest path a Unix socket address holds (sun_path less its NUL).
func maxSocketPath() int {
	if runtime.GOOS == "linux" {
		return 107
	}
	return 103
}

// Validate checks the settings a user gives, before anything is created: it fails with an
// error wrapping ErrInvalidConfig that names the setting, rather than replacing a bad value by a
// default. Zero values are fine (they mean the default).
func (c *Config) Validate() error {
	if c.Listener == nil {
		if err := checkSocketPath("the socket path", c.SocketPath); err != nil {
			return err
		}
	}
	if len(c.ScopedSockets) > MaxScopedSockets {
		return bad("%d scoped sockets; a daemon serves at most %d (their caps are counted against its memory: docs/OPERATIONS.md)", len(c.ScopedSockets), MaxScopedSockets)
	}
	for _, s := range c.ScopedSockets {
		if err := checkSocketPath("the scoped socket path", s.Path); err != nil {
			return err
		}
		if s.Path == c.SocketPath {
			return bad("the scoped socket %s is the daemon's own socket", s.Path)
		}
		if len(s.Workspaces) == 0 {
			return bad("the scoped socket %s names no workspace (PATH=WORKSPACE[,WORKSPACE…])", s.Path)
		}
		for _, w := range s.Workspaces {
			if w == "" || !ipc.ValidValue(w) || strings.ContainsAny(w, ",=") {
				return bad("the scoped socket %s names an empty or invalid workspace %q", s.Path, w)
			}
		}
		if s.MaxConns < 0 || s.MaxWatchers < 0 {
			return bad("the scoped socket %s has a negative cap", s.Path)
		}
	}
	for _, v := range []struct {
		flag string
		n    int
	}{{"max-conns", c.MaxConns}, {"max-watchers", c.MaxWatchers}, {"scoped-max-conns", c.ScopedMaxConns}, {"scoped-max-watchers", c.ScopedMaxWatchers}} {
		if v.n < 0 {
			return bad("%s is %d; it must be positive (0 means the default)", v.flag, v.n)
		}
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return bad("metrics-listen %q is not HOST:PORT: %v", c.MetricsListen, err)
		}
	}
	if c.RefreshLeft < 0 || c.RefreshLeft >= 1 {
		return bad("refresh-left is %g; it is the fraction of a token's lifetime left when it is refreshed, between 0 and 1 (default %g)", c.RefreshLeft, DefaultRefreshLeft)
	}
	if c.MinTTL < 0 {
		return bad("min-ttl is %s; it is the least life a served token has, 0 or more (default %s)", c.MinTTL, DefaultMinTTL)
	}
	if c.KeyringTimeout < 0 || c.OSKeyring && c.KeyringTimeout == 0 {
		return bad("keyring-timeout is %s; it must be positive", c.KeyringTimeout)
	}
	if _, ok := authStyles[c.OAuth.Auth]; !ok {
		return bad("token-auth is %q; it must be basic, post or auto", c.OAuth.Auth)
	}
	switch c.Manager {
	case "", ipc.ManagerSystemd, ipc.ManagerSpawned, ipc.ManagerForeground:
	default:
		return bad("unknown manager %q", c.Manager)
	}
	return nil
}

// bad is an error wrapping ErrInvalidConfig: a setting the daemon refuses.
func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
}

// checkSocketPath refuses a socket path that is empty, relative or too long for a Unix socket.
func checkSocketPath(what, p string) error {
	switch {
	case p == "":
		return bad("no %s", what)
	case !filepath.IsAbs(p):
		return bad("%s %q is relative; give an absolute path", what, p)
	case len(p) > maxSocketPath():
		return bad("%s is %d bytes long; a Unix socket path holds at most %d on %s: %s", what, len(p), maxSocketPath(), runtime.GOOS, p)
	}
	return nil
}

// fill sets the defaults of zero fields, inherits the service manager's socket, and builds the
// parts the settings name. It runs once, in New.
func (c *Config) fill() error {
	if c.Listener == nil {
		lns, err := systemd.Listeners()
		if err != nil {
			return fmt.Errorf("cannot use the sockets passed by the service manager: %w", err)
		}
		switch len(lns) {
		case 0:
		case 1:
			c.Listener = lns[0]
		default:
			return fmt.Errorf("the service manager passed %d sockets; blauthd serves one", len(lns))
		}
	}
	if c.Clock == nil {
		c.Clock = clock.Wall{}
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	c.HTTP = token.WithUserAgent(c.HTTP, "blauthd/"+c.Version)
	if c.Tokens == nil && c.OAuth.Enabled {
		c.Tokens = &token.OAuth2{TokenURL: c.OAuth.TokenURL, Issuer: c.OAuth.Issuer, ClientID: c.OAuth.ClientID,
			ClientSecret: c.OAuth.ClientSecret, AuthStyle: authStyles[c.OAuth.Auth]}
	}
	switch x := c.Tokens.(type) {
	case nil:
		c.Tokens = &token.Blaxel{HTTP: c.HTTP, Now: c.Clock.Now}
	case *token.OAuth2:
		if x.HTTP == nil {
			x.HTTP = c.HTTP
		}
	}
	c.decideKeyring()
	def(&c.RequestTimeout, 5*time.Second)
	def(&c.IdleTimeout, 2*time.Minute)
	def(&c.WatchWriteTimeout, 10*time.Second)
	def(&c.Tick, time.Second)
	c.fillCaps()
	if c.Manager == "" {
		c.Manager = ipc.ManagerForeground
		if c.Listener != nil {
			c.Manager = ipc.ManagerSystemd
		}
	}
	return nil
}

// NotifyReload returns a channel that delivers one reload request per SIGHUP (several pending
// ones merge), until ctx ends.
func NotifyReload(ctx context.Context) <-chan struct{} {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()
	return reload
}

// fillCaps sets the default of every socket cap left at zero.
func (c *Config) fillCaps() {
	def(&c.MaxConns, DefaultMaxConns)
	def(&c.MaxWatchers, DefaultMaxWatchers)
	def(&c.ScopedMaxConns, DefaultScopedMaxConns)
	def(&c.ScopedMaxWatchers, DefaultScopedMaxWatchers)
	scoped := make([]ScopedSocket, len(c.ScopedSockets))
	for i, s := range c.ScopedSockets {
		def(&s.MaxConns, c.ScopedMaxConns)
		def(&s.MaxWatchers, c.ScopedMaxWatchers)
		scoped[i] = s
	}
	c.ScopedSockets = scoped
}

// def sets *v to d when it is zero or less: the default of a setting left unset.
func def[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
