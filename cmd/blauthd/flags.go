package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/adrg/xdg"
	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/systemd"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/blconfig"
	"github.com/blauth/blauth/sources/keyring"
)

// options are blauthd's command line: most flags set the daemon.Config directly; the daemon
// validates the result (daemon.Config.Validate), so every rule lives in one place.
type options struct {
	cfg                                            daemon.Config
	logFormat, logLevel                            string
	showVersion, noKeyring, noWriteBack, formGrant bool
}

// errHelp asks for the usage on stdout (--help, -h).
var errHelp = flag.ErrHelp

// newFlagSet defines blauthd's flags on a set that prints nothing: usage() is the help, and
// parseFlags says what was wrong in one line.
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("blauthd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&o.cfg.SocketPath, "socket", "", "")
	fs.StringVar(&o.cfg.ConfigFile, "config", "", "")
	fs.StringVar(&o.logFormat, "log-format", "auto", "")
	fs.StringVar(&o.logLevel, "log-level", "info", "")
	fs.BoolVar(&o.showVersion, "version", false, "")
	fs.StringVar(&o.cfg.BLConfigPath, "bl-config", "", "")
	fs.BoolVar(&o.noKeyring, "no-keyring", false, "")
	fs.BoolVar(&o.noWriteBack, "no-write-back", false, "")
	fs.Float64Var(&o.cfg.RefreshLeft, "refresh-left", daemon.DefaultRefreshLeft, "")
	fs.DurationVar(&o.cfg.MinTTL, "min-ttl", daemon.DefaultMinTTL, "")
	fs.DurationVar(&o.cfg.KeyringTimeout, "keyring-timeout", keyring.DefaultTimeout, "")
	fs.StringVar(&o.cfg.OAuth.TokenURL, "token-url", "", "")
	fs.StringVar(&o.cfg.OAuth.Issuer, "oidc-issuer", "", "")
	fs.StringVar(&o.cfg.OAuth.Auth, "token-auth", "basic", "")
	fs.BoolVar(&o.formGrant, "oauth2", false, "")
	fs.Func("scoped-socket", "", func(v string) error {
		path, list, ok := strings.Cut(v, "=")
		if !ok || path == "" || list == "" {
			return fmt.Errorf("want PATH=WORKSPACE[,WORKSPACE…], got %q", v)
		}
		o.cfg.ScopedSockets = append(o.cfg.ScopedSockets, daemon.ScopedSocket{Path: path, Workspaces: strings.Split(list, ",")})
		return nil
	})
	fs.StringVar(&o.cfg.MetricsListen, "metrics-listen", "", "")
	fs.BoolVar(&o.cfg.MetricsWorkspaces, "metrics-workspaces", false, "")
	fs.IntVar(&o.cfg.MaxConns, "max-conns", daemon.DefaultMaxConns, "")
	fs.IntVar(&o.cfg.MaxWatchers, "max-watchers", daemon.DefaultMaxWatchers, "")
	fs.IntVar(&o.cfg.ScopedMaxConns, "scoped-max-conns", daemon.DefaultScopedMaxConns, "")
	fs.IntVar(&o.cfg.ScopedMaxWatchers, "scoped-max-watchers", daemon.DefaultScopedMaxWatchers, "")
	return fs
}

// parseFlags reads the command line. Its errors are one line that names the flag as it is
// written (--name) and, for an unknown one, the nearest known flag; errHelp asks for usage().
func parseFlags(args []string) (*options, error) {
	var o options
	fs := newFlagSet(&o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, flagError(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (blauthd takes flags only)", fs.Arg(0))
	}
	return &o, nil
}

// flagMention is how the flag package names a flag in its errors: " -name" at the end, or
// before ":".
var flagMention = regexp.MustCompile(`(^|[ :])-([a-z][a-z0-9-]*)\b`)

// flagError rewrites the flag package's error in blauthd's terms: double-dash names, and for an
// unknown flag the one it is probably a typo of.
func flagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		msg = "unknown flag --" + name
		if near := ipc.Nearest(name, names); len(near) > 0 {
			msg += "; did you mean --" + near[0] + "?"
		}
		return errors.New(msg)
	}
	msg = strings.Replace(msg, "flag needs an argument: -", "a value is missing after --", 1)
	return errors.New(flagMention.ReplaceAllString(msg, "$1--$2"))
}

// config turns the options into the daemon's configuration, with the per-user defaults, the
// environment and blauth's config file. Its error is a setting blauthd refuses to start with.
func (o *options) config(log zerolog.Logger) (daemon.Config, error) {
	cfg := o.cfg
	cfg.Log, cfg.Environ, cfg.WriteBack, cfg.Version = log, os.Environ(), !o.noWriteBack, version
	cfg.Manager = os.Getenv("BLAUTH_MANAGER")
	cfg.OAuth.Enabled = cfg.OAuth.TokenURL != "" || cfg.OAuth.Issuer != "" || o.formGrant
	cfg.OAuth.ClientID, cfg.OAuth.ClientSecret = os.Getenv("BLAUTH_OAUTH_CLIENT_ID"), os.Getenv("BLAUTH_OAUTH_CLIENT_SECRET")
	if cfg.SocketPath == "" {
		cfg.SocketPath = ipc.SocketPath(os.Getenv, runtimeDir())
	}
	if cfg.BLConfigPath == "" && xdg.Home != "" {
		cfg.BLConfigPath = blconfig.DefaultPath(xdg.Home)
	}
	if cfg.ConfigFile == "" && xdg.ConfigHome != "" {
		cfg.ConfigFile, cfg.ConfigFileOptional = sources.DefaultBlauthConfigPath(xdg.ConfigHome), true
	}
	// blauth's config file: --config's (which must exist), else the default one under the XDG
	// config directory (which need not).
	file := &sources.BlauthConfig{}
	if cfg.ConfigFile != "" {
		var err error
		if file, err = sources.ReadBlauthConfig(cfg.ConfigFile, cfg.ConfigFileOptional); err != nil {
			return cfg, err
		}
	}
	cfg.NotifyCommand, cfg.RunDomains = file.NotifyCommand, file.RunDomains
	off, err := keyringOff(o.noKeyring, os.Getenv(noKeyringEnv), file)
	if err != nil {
		return cfg, err
	}
	cfg.OSKeyring, cfg.KeyringOff = off == "", off
	return cfg, nil
}

// noKeyringEnv turns the keyring off from the environment, which a daemon started by the helper
// or by socket activation inherits where no flag reaches.
const noKeyringEnv = "BLAUTH_NO_KEYRING"

// keyringOff says why the OS keyring is turned off, "" when nothing turns it off: the flag,
// BLAUTH_NO_KEYRING (1/true/yes; 0/false/no or empty leave it on), or keyring: false in the
// config file. Any of them turns it off.
func keyringOff(flagOff bool, env string, file *sources.BlauthConfig) (string, error) {
	envOff := false
	switch strings.ToLower(env) {
	case "", "0", "false", "no":
	case "1", "true", "yes":
		envOff = true
	default:
		return "", fmt.Errorf("%s=%q: want 1 (no keyring) or 0", noKeyringEnv, ipc.Clip(env, 40))
	}
	switch {
	case flagOff:
		return "--no-keyring was given", nil
	case envOff:
		return noKeyringEnv + "=" + env + " is set", nil
	case file.Keyring != nil && !*file.Keyring:
		return "keyring: false in " + file.Path, nil
	}
	return "", nil
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
	if format == "auto" {
		format = "json"
		if f, isFile := w.(*os.File); isFile && systemd.IsJournalStream(f) {
			format = "journal"
		} else if tty {
			format = "console"
		}
	}
	switch format {
	case "json":
	case "journal":
		w = &systemd.JournalWriter{Identifier: "blauthd", Fallback: w}
	case "console":
		// Colour codes only on a terminal that wants them: a file or the journal gets plain text.
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !tty || os.Getenv("NO_COLOR") != ""}
	default:
		return zerolog.Nop(), fmt.Errorf("unknown log format %q (json, console, journal)", format)
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
