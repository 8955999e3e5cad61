// Package resolver decides, for each request, which credential serves it: it walks the ranked
// sources (the caller's .env, the caller's environment, the daemon's environment, the OS keyring,
// the bl config), keeps the provenance of the winner and of what it shadows, and announces when
// a source it holds changed. The sources themselves (reading, parsing, watching) are package
// sources'.
package resolver

import (
	"context"
	"sort"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon/internal/notify"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/internal/recent"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/blconfig"
	"github.com/blauth/blauth/sources/dotenv"
	"github.com/blauth/blauth/sources/keyring"
	"github.com/blauth/blauth/sources/watch"
)

// Config configures a Resolver. Zero fields take the defaults noted.
type Config struct {
	// Environ is the daemon's own environment, as os.Environ gives it.
	Environ []string
	// BLConfigPath is the bl CLI config, normally $HOME/.blaxel/config.yaml; empty disables it.
	BLConfigPath string
	// Keyring holds secrets saved with blauth-helper login; nil disables it.
	Keyring keyring.Store
	// Watcher reports file changes; nil means .env files are read on every request and the bl
	// config only on Reload.
	Watcher *watch.Watcher
	// MaxDotenvDirs bounds how many callers' .env files are cached and watched (64).
	MaxDotenvDirs int
	// DotenvIdle drops a cached .env nobody asked for in this long (10m).
	DotenvIdle time.Duration
	// FileReadTimeout bounds how long a request (or a reload) waits for one read of a .env or of
	// the bl config (sources.DefaultFileReadTimeout, 2s).
	FileReadTimeout time.Duration
	// RecheckDelay is how long to wait before reading again a bl config that looks cut short
	// (200ms).
	RecheckDelay time.Duration
	// ConfigFile is blauth's own config file, whose routes: are read at New and again whenever
	// it changes; "" means no routes. ConfigFileOptional makes a missing file no routes rather
	// than an error (the default path).
	ConfigFile         string
	ConfigFileOptional bool
	// Clock tells the time for idle .env files (the wall clock when nil).
	Clock clock.Clock
	Log   zerolog.Logger
}

// Resolver merges the sources. Safe for concurrent use.
type Resolver struct {
	cfg         Config
	daemonEnv   map[string]string
	daemonLayer layer // daemonEnv as every request sees it
	dotenvs     *dotenv.Cache
	tomls       *dotenv.Cache    // the callers' blaxel.toml
	routes      *routeSource     // nil without a config file
	bl          *blconfig.Source // nil without a bl config
	ring        *keyring.Source  // nil without a keyring
	changed     notify.Broadcast
	creds       recent.Cache[sources.Credential, *sources.Credential] // never changed once made
}

// New builds a resolver and reads the daemon-held sources once.
func New(ctx context.Context, cfg Config) *Resolver {
	r := &Resolver{cfg: cfg, daemonEnv: sources.EnvVars(cfg.Environ)}
	r.daemonLayer = envLayer(sources.Provenance{Kind: sources.SourceDaemonEnv}, false, r.daemonEnv)
	r.dotenvs = dotenv.NewCache(dotenv.CacheConfig{
		Watcher: cfg.Watcher, MaxDirs: cfg.MaxDotenvDirs, Idle: cfg.DotenvIdle, ReadTimeout: cfg.FileReadTimeout,
		Clock: cfg.Clock, OnChange: r.changed.Notify, Log: cfg.Log,
	})
	r.tomls = newTOMLCache(cfg, r.changed.Notify)
	if cfg.ConfigFile != "" {
		r.routes = newRouteSource(cfg.ConfigFile, cfg.ConfigFileOptional, cfg.Watcher, r.changed.Notify, cfg.Log)
	}
	if cfg.BLConfigPath != "" {
		r.bl = blconfig.NewSource(blconfig.SourceConfig{
			Path: cfg.BLConfigPath, Watcher: cfg.Watcher, ReadTimeout: cfg.FileReadTimeout, RecheckDelay: cfg.RecheckDelay,
			OnChange: r.changed.Notify, Log: cfg.Log,
		})
	}
	if cfg.Keyring != nil {
		r.ring = keyring.NewSource(cfg.Keyring, cfg.Log)
		r.ring.Load(ctx)
	}
	return r
}

// Changed returns a channel closed at the next change of a source: a watched file changed and
// was read again, or the sources were reloaded.
func (r *Resolver) Changed() <-chan struct{} { return r.changed.Wait() }

// Stamp moves whenever a resolution may come out otherwise: a source changed (what Changed
// announces), or a caller's cached .env or blaxel.toml was read again or dropped from its cache.
// A Reusable resolution made after reading a stamp is what resolving the same request gives
// again for as long as Stamp returns that value.
func (r *Resolver) Stamp() uint64 {
	return r.changed.Generation() + r.dotenvs.Generation() + r.tomls.Generation()
}

// Close stops watching.
func (r *Resolver) Close() {
	if r.bl != nil {
		r.bl.Close()
	}
	r.dotenvs.Close()
	r.tomls.Close()
	if r.routes != nil {
		r.routes.close()
	}
}

// Reload re-reads every source: the bl config, the keyring, and the cached .env and blaxel.toml
// files (each waited for at most FileReadTimeout), and the routes of blauth's config file (in the
// background). It also retries a watch of the bl config that was refused.
func (r *Resolver) Reload(ctx context.Context) {
	if r.bl != nil {
		r.bl.Reload()
	}
	r.ReloadKeyring(ctx)
	r.dotenvs.Reload()
	r.tomls.Reload()
	if r.routes != nil {
		r.routes.changed() // in the background: a reload never waits on the file
	}
	r.changed.Notify()
}

// ReloadKeyring re-reads the keyring (after blauth-helper login or logout).
func (r *Resolver) ReloadKeyring(ctx context.Context) {
	if r.ring != nil {
		r.ring.Load(ctx)
		r.changed.Notify()
	}
}

// SourceErrors returns the problems of the sources the daemon holds itself, each once: the bl
// config (unreadable, invalid, cut short, refused as unsafe, not watched), the keyring
// (unavailable), file watching (exhausted). A request's own .env problems are in its
// Resolution.Errors instead. No error holds a secret.
func (r *Resolver) SourceErrors() []sources.SourceError {
	var out []sources.SourceError
	if r.bl != nil {
		out = append(out, r.bl.Errors()...)
	}
	if r.ring != nil {
		out = append(out, r.ring.Errors()...)
	}
	if err := r.dotenvs.Err(); err != nil {
		out = append(out, sources.SourceError{Source: sources.Provenance{Kind: sources.SourceDotenv}, Error: err.Error()})
	}
	if err := r.tomls.Err(); err != nil && r.dotenvs.Err() == nil { // one exhaustion, said once
		out = append(out, sources.SourceError{Source: sources.Provenance{Kind: sources.SourceBlaxelTOML}, Error: err.Error()})
	}
	if r.routes != nil {
		out = append(out, r.routes.errors()...)
	}
	return out
}

// Sweep drops .env files nobody asked for within DotenvIdle.
func (r *Resolver) Sweep() { r.dotenvs.Sweep(); r.tomls.Sweep() }

// WatchedDotenvs returns how many .env files are cached and watched.
func (r *Resolver) WatchedDotenvs() int { return r.dotenvs.Len() }

// blView is the bl config's last good view, nil when there is none.
func (r *Resolver) blView() *blconfig.View {
	if r.bl == nil {
		return nil
	}
	return r.bl.View()
}

// Workspaces lists every workspace a daemon-held source knows, sorted.
func (r *Resolver) Workspaces() []string {
	set := map[string]bool{}
	if w := r.daemonEnv[sources.VarWorkspace]; w != "" {
		set[w] = true
	}
	if r.ring != nil {
		for _, w := range r.ring.Workspaces() {
			set[w] = true
		}
	}
	if bl := r.blView(); bl != nil {
		if bl.Context.Workspace != "" {
			set[bl.Context.Workspace] = true
		}
		for _, w := range bl.Workspaces {
			set[w.Name] = true
		}
	}
	out := make([]string, 0, len(set))
	for w := range set {
		if w != "" {
			out = append(out, w)
		}
	}
	sort.Strings(out)
	return out
}

// DaemonBaseURL is the API base for a daemon-held credential of workspace ws.
func (r *Resolver) DaemonBaseURL(ws string) string { return r.daemonBase(workspaceEnv(r.blView(), ws)) }

// daemonBase is the API base of the daemon's own credentials for a workspace whose bl config
// entry has env: wsEnv.
func (r *Resolver) daemonBase(wsEnv string) string {
	return sources.BaseURL(r.daemonEnv[sources.VarAPIURL], r.daemonEnv[sources.VarEnv], wsEnv)
}

// workspaceEnv is the env: the bl config gives workspace ws ("" when none).
func workspaceEnv(bl *blconfig.View, ws string) string {
	if bl != nil {
		if w, ok := bl.Workspace(ws); ok {
			return w.Env
		}
	}
	return ""
}
