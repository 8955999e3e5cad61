package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/adrg/xdg"
	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/systemd"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// options are blauthd's command line. Turning them into a daemon.Config is mechanical; the
// daemon validates the result (daemon.Config.Validate), so every rule lives in one place.
type options struct {
	socket, logFormat, logLevel, blConfig string
	showVersion, noKeyring, noWriteBack   bool
	refreshLeft                           float64
	minTTL, keyringTimeout                time.Duration
	tokenURL, issuer, tokenAuth           string
	formGrant                             bool
	scoped                                []daemon.ScopedSocket
	metricsListen                         string
	metricsWorkspaces                     bool
	caps                                  socketCaps
}

// socketCaps are the connection and watcher caps of the daemon's socket and of each scoped one.
type socketCaps struct{ conns, watchers, scopedConns, scopedWatchers int }

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	var o options
	fs := flag.NewFlagSet("blauthd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.socket, "socket", "", "listen on this socket, an absolute path (default $BLAUTH_SOCKET, else $XDG_RUNTIME_DIR/blauth/blauthd.sock)")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log format: json, console, journal, or auto (journal under systemd, console on a terminal, else json)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.StringVar(&o.blConfig, "bl-config", "", "the bl CLI config (default $HOME/.blaxel/config.yaml)")
	fs.BoolVar(&o.noKeyring, "no-keyring", false, "do not use the OS keyring")
	fs.BoolVar(&o.noWriteBack, "no-write-back", false, "do not save refreshed bl login sessions to the bl config")
	fs.Float64Var(&o.refreshLeft, "refresh-left", daemon.DefaultRefreshLeft, "refresh in the background when this fraction of a token's lifetime is left (0 < f < 1)")
	fs.DurationVar(&o.minTTL, "min-ttl", daemon.DefaultMinTTL, "never serve a token with less life left than this")
	fs.DurationVar(&o.keyringTimeout, "keyring-timeout", sources.DefaultKeyringTimeout, "time box of each OS keyring call")
	fs.StringVar(&o.tokenURL, "token-url", "", "use this RFC 6749 token endpoint (form-encoded) instead of Blaxel's JSON one")
	fs.StringVar(&o.issuer, "oidc-issuer", "", "discover the RFC 6749 token endpoint from this issuer's OIDC metadata")
	fs.StringVar(&o.tokenAuth, "token-auth", "basic", "client authentication at a standard token endpoint: basic, post or auto")
	fs.BoolVar(&o.formGrant, "oauth2", false, "talk RFC 6749 (form-encoded) to {BL_API_URL}/oauth/token")
	fs.Func("scoped-socket", "also serve `PATH=WORKSPACE[,WORKSPACE…]`: a socket answering get and watch for those workspaces only, to forward over SSH or into a container (repeatable)", func(v string) error {
		path, list, ok := strings.Cut(v, "=")
		if !ok || path == "" || list == "" {
			return fmt.Errorf("want PATH=WORKSPACE[,WORKSPACE…], got %q", v)
		}
		o.scoped = append(o.scoped, daemon.ScopedSocket{Path: path, Workspaces: strings.Split(list, ",")})
		return nil
	})
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics at GET /metrics on this `HOST:PORT` (e.g. 127.0.0.1:9464)")
	fs.BoolVar(&o.metricsWorkspaces, "metrics-workspaces", false, "label per-token metrics with workspace names")
	fs.IntVar(&o.caps.conns, "max-conns", daemon.DefaultMaxConns, "most connections open at once on the daemon's socket, watchers included; more are answered code=busy")
	fs.IntVar(&o.caps.watchers, "max-watchers", daemon.DefaultMaxWatchers, "most watch streams open at once on the daemon's socket")
	fs.IntVar(&o.caps.scopedConns, "scoped-max-conns", daemon.DefaultScopedMaxConns, "most connections open at once on each scoped socket")
	fs.IntVar(&o.caps.scopedWatchers, "scoped-max-watchers", daemon.DefaultScopedMaxWatchers, "most watch streams open at once on each scoped socket")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return &o, nil
}

// config turns the options into the daemon's configuration, with the per-user defaults.
func (o *options) config(log zerolog.Logger) daemon.Config {
	cfg := daemon.Config{
		SocketPath:        o.socket,
		Log:               log,
		Environ:           os.Environ(),
		BLConfigPath:      o.blConfig,
		WriteBack:         !o.noWriteBack,
		RefreshLeft:       o.refreshLeft,
		MinTTL:            o.minTTL,
		OSKeyring:         !o.noKeyring,
		ScopedSockets:     o.scoped,
		MetricsListen:     o.metricsListen,
		MetricsWorkspaces: o.metricsWorkspaces,
		KeyringTimeout:    o.keyringTimeout,
		MaxConns:          o.caps.conns,
		MaxWatchers:       o.caps.watchers,
		ScopedMaxConns:    o.caps.scopedConns,
		ScopedMaxWatchers: o.caps.scopedWatchers,
		Version:           version,
		Manager:           os.Getenv("BLAUTH_MANAGER"),
		OAuth: daemon.OAuthSettings{
			TokenURL: o.tokenURL, Issuer: o.issuer, Auth: o.tokenAuth, Enabled: o.tokenURL != "" || o.issuer != "" || o.formGrant,
			ClientID: os.Getenv("BLAUTH_OAUTH_CLIENT_ID"), ClientSecret: os.Getenv("BLAUTH_OAUTH_CLIENT_SECRET"),
		},
	}
	if cfg.SocketPath == "" {
		cfg.SocketPath = ipc.SocketPath(os.Getenv, runtimeDir())
	}
	if cfg.BLConfigPath == "" && xdg.Home != "" {
		cfg.BLConfigPath = sources.DefaultBLConfigPath(xdg.Home)
	}
	return cfg
}

// runtimeDir is the XDG runtime directory as adrg/xdg resolves it; on macOS, where xdg's
// default is not a runtime directory, the per-user temporary directory is used instead.
func runtimeDir() string {
	if runtime.GOOS == "darwin" && os.Getenv("XDG_RUNTIME_DIR") == "" {
		return ""
	}
	return xdg.RuntimeDir
}

func newLogger(w io.Writer, format, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("unknown log level %q (debug, info, warn, error)", level)
	}
	tty := isTerminal(w)
	switch format {
	case "auto":
		f, isFile := w.(*os.File)
		switch {
		case isFile && systemd.IsJournalStream(f):
			format = "journal"
		case tty:
			format = "console"
		default:
			format = "json"
		}
	case "json", "console", "journal":
	default:
		return zerolog.Nop(), fmt.Errorf("unknown log format %q (json, console, journal)", format)
	}
	switch format {
	case "journal":
		w = &systemd.JournalWriter{Identifier: "blauthd", Fallback: w}
	case "console":
		// Colour codes only on a terminal that wants them: a file or the journal gets plain text.
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !tty || os.Getenv("NO_COLOR") != ""}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
