// Command blauthd is blauth's per-user credential daemon: it keeps one fresh Blaxel token per
// workspace and serves it over a Unix socket. See README.md and docs/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/adrg/xdg"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/harden"
	"github.com/blauth/blauth/internal/systemd"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("blauthd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		socket      = fs.String("socket", "", "listen on this socket (default $BLAUTH_SOCKET, else $XDG_RUNTIME_DIR/blauth/blauthd.sock)")
		logFormat   = fs.String("log-format", "auto", "log format: json, console, journal, or auto (journal under systemd, console on a terminal)")
		logLevel    = fs.String("log-level", "info", "log level: debug, info, warn, error")
		showVersion = fs.Bool("version", false, "print the version and exit")
		blConfig    = fs.String("bl-config", "", "the bl CLI config (default $HOME/.blaxel/config.yaml)")
		noKeyring   = fs.Bool("no-keyring", false, "do not use the OS keyring")
		noWriteBack = fs.Bool("no-write-back", false, "do not save refreshed bl login sessions to the bl config")
		refreshLeft = fs.Float64("refresh-left", 0.4, "refresh in the background when this fraction of a token's lifetime is left")
		minTTL      = fs.Duration("min-ttl", 30*time.Second, "never serve a token with less life left than this")
		keyringTime = fs.Duration("keyring-timeout", 3*time.Second, "time box of each OS keyring call")
		tokenURL    = fs.String("token-url", "", "use this RFC 6749 token endpoint (form-encoded) instead of Blaxel's JSON one")
		issuer      = fs.String("oidc-issuer", "", "discover the RFC 6749 token endpoint from this issuer's OIDC metadata")
		tokenAuth   = fs.String("token-auth", "basic", "client authentication at a standard token endpoint: basic, post or auto")
		formGrant   = fs.Bool("oauth2", false, "talk RFC 6749 (form-encoded) to {BL_API_URL}/oauth/token")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "blauthd: error: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintf(os.Stdout, "blauthd %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "blauthd: error: %v\n", err)
		return 2
	}
	if err := harden.Process(); err != nil {
		log.Warn().Err(err).Msg("could not disable core dumps")
	}

	cfg := daemon.Config{
		Log:          log,
		Environ:      os.Environ(),
		WriteBack:    !*noWriteBack,
		RefreshLeft:  *refreshLeft,
		MinTTL:       *minTTL,
		Version:      version,
		BLConfigPath: *blConfig,
	}
	if cfg.BLConfigPath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cfg.BLConfigPath = sources.DefaultBLConfigPath(home)
		}
	}
	if *tokenURL != "" || *issuer != "" || *formGrant {
		x := &daemon.OAuth2Exchanger{TokenURL: *tokenURL, Issuer: *issuer,
			ClientID: os.Getenv("BLAUTH_OAUTH_CLIENT_ID"), ClientSecret: os.Getenv("BLAUTH_OAUTH_CLIENT_SECRET")}
		switch *tokenAuth {
		case "basic":
			x.AuthStyle = oauth2.AuthStyleInHeader
		case "post":
			x.AuthStyle = oauth2.AuthStyleInParams
		case "auto":
			x.AuthStyle = oauth2.AuthStyleAutoDetect
		default:
			fmt.Fprintf(stderr, "blauthd: error: --token-auth must be basic, post or auto\n")
			return 2
		}
		cfg.Exchanger = x
	}
	if !*noKeyring {
		cfg.Keyring = &sources.Keyring{Timeout: *keyringTime, Log: log.With().Str("component", "keyring").Logger()}
	}
	lns, err := systemd.Listeners()
	if err != nil {
		log.Error().Err(err).Msg("cannot use the sockets passed by the service manager")
		return 1
	}
	switch {
	case len(lns) > 1:
		log.Error().Int("count", len(lns)).Msg("the service manager passed more than one socket; blauthd serves one")
		return 1
	case len(lns) == 1:
		cfg.Listener = lns[0]
	default:
		cfg.SocketPath = *socket
		if cfg.SocketPath == "" {
			cfg.SocketPath = socketPath()
		}
		cfg.SocketPath, _ = filepath.Abs(cfg.SocketPath)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	cfg.Reload = reload

	if err := daemon.Run(ctx, cfg); err != nil {
		log.Error().Err(err).Msg("blauthd cannot run")
		if errors.Is(err, daemon.ErrAlreadyRunning) {
			return 3
		}
		return 1
	}
	return 0
}

// runtimeDir is the XDG runtime directory as adrg/xdg resolves it; on macOS, where xdg's
// default is not a runtime directory, the per-user temporary directory is used instead.
func runtimeDir() string {
	if runtime.GOOS == "darwin" && os.Getenv("XDG_RUNTIME_DIR") == "" {
		return ""
	}
	return xdg.RuntimeDir
}

func socketPath() string { return ipc.SocketPath(os.Getenv, runtimeDir()) }

func newLogger(w io.Writer, format, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("unknown log level %q (debug, info, warn, error)", level)
	}
	switch format {
	case "auto":
		if f, ok := w.(*os.File); ok && systemd.IsJournalStream(f) {
			format = "journal"
		} else if ok && isTerminal(f) {
			format = "console"
		} else {
			format = "json"
		}
	case "json", "console", "journal":
	default:
		return zerolog.Nop(), fmt.Errorf("unknown log format %q (json, console, journal)", format)
	}
	if format == "journal" {
		w = &systemd.JournalWriter{Identifier: "blauthd", Fallback: w}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: os.Getenv("NO_COLOR") != ""}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
