package sources

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Variables read from environments and .env files.
const (
	VarWorkspace         = "BL_WORKSPACE"
	VarAPIKey            = "BL_API_KEY"
	VarClientCredentials = "BL_CLIENT_CREDENTIALS"
	VarEnv               = "BL_ENV"
	VarAPIURL            = "BL_API_URL"
)

// DotenvName is the file read from the caller's directory.
const DotenvName = ".env"

// KeyringStore is the part of *Keyring the resolver and the daemon use.
type KeyringStore interface {
	Get(ctx context.Context, workspace string) (KeyringSecret, error)
	Set(ctx context.Context, workspace string, s KeyringSecret) error
	Delete(ctx context.Context, workspace string) error
	List(ctx context.Context) ([]string, error)
}

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Environ is the daemon's own environment, as os.Environ gives it.
	Environ []string
	// BLConfigPath is the bl CLI config, normally $HOME/.blaxel/config.yaml; empty disables it.
	BLConfigPath string
	// Keyring holds secrets saved with blauth-helper login; nil disables it.
	Keyring KeyringStore
	// Watcher reports file changes; nil means .env files are read on every request and the bl
	// config only on Reload.
	Watcher *Watcher
	// MaxDotenvDirs bounds how many callers' .env files are cached and watched (64); the least
	// recently used is dropped first.
	MaxDotenvDirs int
	// DotenvIdle drops a cached .env nobody asked for in this long (10m).
	DotenvIdle time.Duration
	// OnChange is called after a watched source changed and was re-read.
	OnChange func(kind string)
	Log      zerolog.Logger
}

// Resolver merges the sources and decides, for each request, which credential wins, keeping the
// provenance of the winner and of what it shadows. Safe for concurrent use.
type Resolver struct {
	cfg       ResolverConfig
	daemonEnv map[string]string

	mu       sync.RWMutex
	bl       *BLConfig // last good view
	blErr    error     // the last read's error (a torn file), nil when the view is current
	blRetry  *time.Timer
	blTries  int
	blCancel func()
	ring     map[string]KeyringSecret
	ringErr  error
	dotenvs  map[string]*dotenvFile
}

// dotenvFile is a cached .env. Its contents change only under the resolver's write lock;
// lastUsed is updated under the read lock, hence atomic.
type dotenvFile struct {
	path     string
	vars     map[string]string // nil when the file does not exist
	errs     []DotenvError
	readErr  error
	lastUsed atomic.Int64 // UnixNano
	cancel   func()
}

func (f *dotenvFile) view() dotenvView {
	return dotenvView{path: f.path, vars: f.vars, errs: f.errs, readErr: f.readErr}
}

func (f *dotenvFile) idle(now time.Time, d time.Duration) bool {
	return now.Sub(time.Unix(0, f.lastUsed.Load())) > d
}

// NewResolver builds a resolver and reads the daemon-held sources once.
func NewResolver(ctx context.Context, cfg ResolverConfig) *Resolver {
	if cfg.MaxDotenvDirs <= 0 {
		cfg.MaxDotenvDirs = 64
	}
	if cfg.DotenvIdle <= 0 {
		cfg.DotenvIdle = 10 * time.Minute
	}
	r := &Resolver{cfg: cfg, daemonEnv: envMap(cfg.Environ), dotenvs: map[string]*dotenvFile{}}
	r.loadBL()
	r.loadKeyring(ctx)
	if cfg.Watcher != nil && cfg.BLConfigPath != "" {
		cancel, err := cfg.Watcher.Watch(cfg.BLConfigPath, func() {
			if r.loadBL() {
				r.changed(SourceBLConfig)
			}
		})
		if err != nil {
			cfg.Log.Warn().Err(err).Str("path", cfg.BLConfigPath).Msg("cannot watch the bl config; it is re-read on reload only")
		} else {
			r.blCancel = cancel
		}
	}
	return r
}

func (r *Resolver) changed(kind string) {
	if r.cfg.OnChange != nil {
		r.cfg.OnChange(kind)
	}
}

func envMap(environ []string) map[string]string {
	m := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "BL_") {
			m[k] = v
		}
	}
	return m
}

// Close stops watching.
func (r *Resolver) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.blCancel != nil {
		r.blCancel()
	}
	if r.blRetry != nil {
		r.blRetry.Stop()
	}
	for d, f := range r.dotenvs {
		if f.cancel != nil {
			f.cancel()
		}
		delete(r.dotenvs, d)
	}
}

// Reload re-reads every source: the bl config, the keyring, and the cached .env files.
func (r *Resolver) Reload(ctx context.Context) {
	r.loadBL()
	r.loadKeyring(ctx)
	r.mu.Lock()
	for _, f := range r.dotenvs {
		f.load()
	}
	r.mu.Unlock()
}

// ReloadKeyring re-reads the keyring (after blauth-helper login or logout).
func (r *Resolver) ReloadKeyring(ctx context.Context) { r.loadKeyring(ctx) }

// loadBL reads the bl config. A torn or invalid file keeps the last good view and is retried
// with growing delays (bl rewrites it in place, so a reader may catch it half written). It
// reports whether the view changed.
func (r *Resolver) loadBL() bool {
	path := r.cfg.BLConfigPath
	if path == "" {
		return false
	}
	data, err := os.ReadFile(path)
	var c *BLConfig
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c, err = &BLConfig{}, nil
	case err == nil:
		c, err = ParseBLConfig(data)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if errors.Is(err, ErrBLConfigEmpty) && r.blTries >= 3 {
		// Still empty after the retries (well over a second): not a write in progress but a
		// file the user emptied. Believe it.
		c, err = &BLConfig{}, nil
	}
	if err != nil {
		r.blErr = fmt.Errorf("%s: %w", path, err)
		r.blTries++
		if r.blRetry != nil {
			r.blRetry.Stop()
		}
		if r.blTries <= 8 {
			d := time.Duration(50<<r.blTries) * time.Millisecond
			r.blRetry = time.AfterFunc(d, func() {
				if r.loadBL() {
					r.changed(SourceBLConfig)
				}
			})
		}
		r.cfg.Log.Warn().Err(err).Str("path", path).Msg("cannot read the bl config; keeping the last good view")
		return false
	}
	r.blTries = 0
	r.blErr = nil
	same := r.bl != nil && string(r.bl.Marshal()) == string(c.Marshal())
	r.bl = c
	return !same
}

func (r *Resolver) loadKeyring(ctx context.Context) {
	if r.cfg.Keyring == nil {
		return
	}
	ring := map[string]KeyringSecret{}
	names, err := r.cfg.Keyring.List(ctx)
	for _, n := range names {
		s, gerr := r.cfg.Keyring.Get(ctx, n)
		if gerr == nil {
			ring[n] = s
		} else if !errors.Is(gerr, ErrKeyringNotFound) {
			err = gerr
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ringErr = err
	if err != nil {
		r.cfg.Log.Warn().Err(err).Msg("the OS keyring did not answer; keyring credentials are unavailable, every other source still works")
		if r.ring != nil {
			return // keep the last good view
		}
	}
	r.ring = ring
}

// Request is what a caller sent: an optional workspace, its directory and its BL_* variables.
type Request struct {
	Workspace string
	Dir       string
	Env       map[string]string
}

// SourceError is a problem with one source. It never holds a secret.
type SourceError struct {
	Source Provenance `json:"source"`
	Error  string     `json:"error"`
}

// Resolution is the outcome for one request.
type Resolution struct {
	Workspace  string
	Credential *Credential   // the winner; nil when there is none
	Shadowed   []*Credential // lower-ranked credentials for the same workspace
	Errors     []SourceError
}

// DaemonHeld reports whether the winning credential lives in a source the daemon watches itself
// (its environment, the keyring, the bl config), and so is worth keeping fresh unasked.
func (res *Resolution) DaemonHeld() bool {
	if res.Credential == nil {
		return false
	}
	k := res.Credential.Source.Kind
	return k == SourceDaemonEnv || k == SourceKeyring || k == SourceBLConfig
}

// Resolution errors.
var (
	ErrNoWorkspace   = errors.New("no workspace")
	ErrNoCredentials = errors.New("no credentials")
)

// layer is one environment-like source: a .env file, the caller's or the daemon's environment.
type layer struct {
	kind, where string
	vars        map[string]string
}

// Resolve decides which credential serves req, following the precedence in docs/SOURCES.md:
// the caller's .env, the caller's environment, the daemon's environment, the keyring, the bl
// config. It returns ErrNoWorkspace or ErrNoCredentials (wrapped, with the reason) when nothing
// can serve.
func (r *Resolver) Resolve(req Request) (*Resolution, error) {
	res := &Resolution{}
	var layers []layer
	if req.Dir != "" && filepath.IsAbs(req.Dir) {
		f := r.dotenv(filepath.Join(filepath.Clean(req.Dir), DotenvName))
		if f.vars != nil {
			layers = append(layers, layer{SourceDotenv, f.path, f.vars})
		}
		prov := Provenance{SourceDotenv, f.path}
		for _, e := range f.errs {
			res.Errors = append(res.Errors, SourceError{prov, e.Error()})
		}
		if f.readErr != nil {
			res.Errors = append(res.Errors, SourceError{prov, f.readErr.Error()})
		}
	}
	if len(req.Env) > 0 {
		layers = append(layers, layer{SourceCallerEnv, "", req.Env})
	}
	callerLayers := len(layers)
	layers = append(layers, layer{SourceDaemonEnv, "", r.daemonEnv})

	r.mu.RLock()
	bl, blErr, ring, ringErr := r.bl, r.blErr, r.ring, r.ringErr
	r.mu.RUnlock()
	if blErr != nil {
		res.Errors = append(res.Errors, SourceError{Provenance{SourceBLConfig, r.cfg.BLConfigPath}, blErr.Error()})
	}
	if ringErr != nil {
		res.Errors = append(res.Errors, SourceError{Provenance{SourceKeyring, DefaultKeyringService}, ringErr.Error()})
	}

	// 1. The workspace.
	ws := req.Workspace
	for i := 0; ws == "" && i < len(layers); i++ {
		ws = layers[i].vars[VarWorkspace]
	}
	if ws == "" && bl != nil {
		ws = bl.Context.Workspace
	}
	if ws == "" {
		return res, fmt.Errorf("%w: none was asked for, and no BL_WORKSPACE nor bl context names one", ErrNoWorkspace)
	}
	res.Workspace = ws
	var wsEnv string
	if bl != nil {
		if w, ok := bl.Workspace(ws); ok {
			wsEnv = w.Env
		}
	}

	// The API base. A caller's BL_API_URL or BL_ENV applies only to credentials the caller
	// supplied: a .env in a cloned repository must never redirect a daemon-held secret to
	// another host.
	daemonBase := BaseURL(r.daemonEnv[VarAPIURL], r.daemonEnv[VarEnv], wsEnv)
	callerBase := daemonBase
	var callerURL, callerEnv string
	for i := 0; i < callerLayers; i++ {
		if callerURL == "" {
			callerURL = layers[i].vars[VarAPIURL]
		}
		if callerEnv == "" {
			callerEnv = layers[i].vars[VarEnv]
		}
	}
	if callerURL != "" || callerEnv != "" {
		callerBase = BaseURL(callerURL, callerEnv, wsEnv)
	}

	// 2. Every credential that belongs to ws, in rank order.
	var cands []*Credential
	for i, l := range layers {
		owner := l.vars[VarWorkspace]
		if owner == "" {
			owner = ws
		}
		if owner != ws {
			continue
		}
		base := daemonBase
		if i < callerLayers {
			base = callerBase
		}
		if k := l.vars[VarAPIKey]; k != "" {
			cands = append(cands, &Credential{Workspace: ws, Kind: KindAPIKey, APIKey: k, BaseURL: base, Source: Provenance{l.kind, where(l, VarAPIKey)}})
		}
		if cc := l.vars[VarClientCredentials]; cc != "" {
			cands = append(cands, &Credential{Workspace: ws, Kind: KindClientCredentials, ClientCredentials: cc, BaseURL: base, Source: Provenance{l.kind, where(l, VarClientCredentials)}})
		}
	}
	if s, ok := ring[ws]; ok {
		c := &Credential{Workspace: ws, Kind: s.Kind, BaseURL: daemonBase, Source: Provenance{SourceKeyring, DefaultKeyringService + "/" + ws}}
		if s.Kind == KindClientCredentials {
			c.ClientCredentials = s.Value
		} else {
			c.Kind, c.APIKey = KindAPIKey, s.Value
		}
		cands = append(cands, c)
	}
	if bl != nil {
		if w, ok := bl.Workspace(ws); ok {
			cr := w.Credentials
			prov := Provenance{SourceBLConfig, r.cfg.BLConfigPath}
			if cr.APIKey != "" {
				cands = append(cands, &Credential{Workspace: ws, Kind: KindAPIKey, APIKey: cr.APIKey, BaseURL: daemonBase, Source: prov})
			}
			if cr.AccessToken != "" || cr.RefreshToken != "" {
				cands = append(cands, &Credential{Workspace: ws, Kind: KindLogin, AccessToken: cr.AccessToken, RefreshToken: cr.RefreshToken, DeviceCode: cr.DeviceCode, BaseURL: daemonBase, Source: prov})
			}
			if cr.ClientCredentials != "" {
				cands = append(cands, &Credential{Workspace: ws, Kind: KindClientCredentials, ClientCredentials: cr.ClientCredentials, BaseURL: daemonBase, Source: prov})
			}
		}
	}
	if len(cands) == 0 {
		return res, fmt.Errorf("%w for workspace %s in any source", ErrNoCredentials, ws)
	}
	// 3. The highest-ranked wins.
	res.Credential, res.Shadowed = cands[0], cands[1:]
	return res, nil
}

func where(l layer, v string) string {
	if l.where == "" {
		return v
	}
	return l.where + "#" + v
}

// dotenvView is what a request reads of a .env file.
type dotenvView struct {
	path    string
	vars    map[string]string // nil when the file does not exist
	errs    []DotenvError
	readErr error
}

// dotenv returns the cached, watched view of the .env at path, reading it on first use. A hit
// takes only the read lock: every request that sends its directory passes here.
func (r *Resolver) dotenv(path string) dotenvView {
	if r.cfg.Watcher == nil {
		f := &dotenvFile{path: path}
		f.load()
		return f.view()
	}
	now := time.Now()
	dir := filepath.Dir(path)
	r.mu.RLock()
	if f := r.dotenvs[dir]; f != nil {
		v := f.view()
		f.lastUsed.Store(now.UnixNano())
		r.mu.RUnlock()
		return v
	}
	r.mu.RUnlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.dotenvs[dir]
	if f == nil {
		r.evictLocked(now)
		f = &dotenvFile{path: path}
		f.load()
		cancel, err := r.cfg.Watcher.Watch(path, func() {
			r.mu.Lock()
			if cur := r.dotenvs[dir]; cur == f {
				f.load()
			}
			r.mu.Unlock()
			r.changed(SourceDotenv)
		})
		if err == nil {
			f.cancel = cancel
			r.dotenvs[dir] = f
		}
	}
	f.lastUsed.Store(now.UnixNano())
	return f.view()
}

// evictLocked makes room for one more .env: idle ones go, then the least recently used.
func (r *Resolver) evictLocked(now time.Time) {
	drop := func(dir string) {
		if f := r.dotenvs[dir]; f.cancel != nil {
			f.cancel()
		}
		delete(r.dotenvs, dir)
	}
	for dir, f := range r.dotenvs {
		if f.idle(now, r.cfg.DotenvIdle) {
			drop(dir)
		}
	}
	for len(r.dotenvs) >= r.cfg.MaxDotenvDirs {
		var oldest string
		var t int64
		for dir, f := range r.dotenvs {
			if used := f.lastUsed.Load(); oldest == "" || used < t {
				oldest, t = dir, used
			}
		}
		drop(oldest)
	}
}

// Sweep drops .env files nobody asked for within DotenvIdle.
func (r *Resolver) Sweep() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for dir, f := range r.dotenvs {
		if f.idle(now, r.cfg.DotenvIdle) {
			if f.cancel != nil {
				f.cancel()
			}
			delete(r.dotenvs, dir)
		}
	}
}

// WatchedDotenvs returns how many .env files are cached and watched.
func (r *Resolver) WatchedDotenvs() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.dotenvs)
}

func (f *dotenvFile) load() {
	f.vars, f.errs, f.readErr = nil, nil, nil
	data, err := os.ReadFile(f.path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			f.readErr = err
		}
		return
	}
	f.vars, f.errs = ParseDotenv(data)
}

// Workspaces lists every workspace a daemon-held source knows, sorted.
func (r *Resolver) Workspaces() []string {
	set := map[string]bool{}
	if w := r.daemonEnv[VarWorkspace]; w != "" {
		set[w] = true
	}
	r.mu.RLock()
	for w := range r.ring {
		set[w] = true
	}
	if r.bl != nil {
		if r.bl.Context.Workspace != "" {
			set[r.bl.Context.Workspace] = true
		}
		for _, w := range r.bl.Workspaces {
			if w.Name != "" {
				set[w.Name] = true
			}
		}
	}
	r.mu.RUnlock()
	out := make([]string, 0, len(set))
	for w := range set {
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}

// BLConfigPath is the bl config this resolver reads.
func (r *Resolver) BLConfigPath() string { return r.cfg.BLConfigPath }

// DefaultBLConfigPath is $HOME/.blaxel/config.yaml, where every Blaxel tool keeps it.
func DefaultBLConfigPath(home string) string { return filepath.Join(home, ".blaxel", "config.yaml") }

// DaemonBaseURL is the API base for a daemon-held credential of workspace ws.
func (r *Resolver) DaemonBaseURL(ws string) string {
	var wsEnv string
	r.mu.RLock()
	if r.bl != nil {
		if w, ok := r.bl.Workspace(ws); ok {
			wsEnv = w.Env
		}
	}
	r.mu.RUnlock()
	return BaseURL(r.daemonEnv[VarAPIURL], r.daemonEnv[VarEnv], wsEnv)
}
