package sources

import (
	"bytes"
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
	"syscall"
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
	// FileReadTimeout bounds how long a request (or a reload) waits for one read of a .env or of
	// the bl config (DefaultFileReadTimeout, 2s). A read that takes longer goes on in the
	// background and its outcome is used when it ends.
	FileReadTimeout time.Duration
	// RecheckDelay is how long the resolver waits before it reads again a bl config that parses
	// but looks cut short, to tell a write in progress from a file written by hand (200ms).
	RecheckDelay time.Duration
	// OnChange is called after a watched source changed and was re-read.
	OnChange func(kind string)
	Log      zerolog.Logger
}

// Resolver merges the sources and decides, for each request, which credential wins, keeping the
// provenance of the winner and of what it shadows. Safe for concurrent use.
//
// No file is read under the resolver's lock: a read runs first, in its own goroutine and bounded
// in time, and its outcome is installed under the lock afterwards, unless a read started later
// has already installed a newer one (each read has a generation number). Concurrent requests for
// a .env nobody has read yet share one read.
type Resolver struct {
	cfg       ResolverConfig
	daemonEnv map[string]string

	// readFile reads one file (readBoundedFile); waitRecheck waits RecheckDelay. Tests replace them.
	readFile    func(path string, limit int64) ([]byte, os.FileInfo, error)
	waitRecheck func()

	// blLoadMu serialises the reads of the bl config (watcher, retry timer, Reload): the last
	// read is the one installed. Requests never take it.
	blLoadMu sync.Mutex

	mu         sync.RWMutex
	bl         *BLConfig // last good view; nil when there is none (or it was dropped as unsafe)
	blErr      error     // the last read's error, nil when the view is current
	blRetry    *time.Timer
	blTries    int
	blCancel   func()
	blWatchErr error // why the bl config is not watched; nil when it is (or there is no watcher)
	ring       map[string]KeyringSecret
	ringErr    error
	dotenvs    map[string]*dotenvFile // by directory
	reads      map[string]*dotenvRead // the latest .env read in flight, by path
	readGen    uint64                 // generation of the latest .env read started
	watchErr   error                  // the last .env watch refused for want of inotify watches
	closed     bool
}

// dotenvFile is a cached, watched .env. Its view changes only under the resolver's write lock;
// lastUsed is updated under the read lock, hence atomic.
type dotenvFile struct {
	path     string
	loaded   bool              // a read has been installed
	gen      uint64            // generation of the installed read; reads older than the watch are not installed
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

// dotenvRead is one read of a .env, shared by every request waiting for it.
type dotenvRead struct {
	gen  uint64
	done chan struct{} // closed once view is set
	view dotenvView
}

// NewResolver builds a resolver and reads the daemon-held sources once.
func NewResolver(ctx context.Context, cfg ResolverConfig) *Resolver {
	if cfg.MaxDotenvDirs <= 0 {
		cfg.MaxDotenvDirs = 64
	}
	if cfg.DotenvIdle <= 0 {
		cfg.DotenvIdle = 10 * time.Minute
	}
	if cfg.FileReadTimeout <= 0 {
		cfg.FileReadTimeout = DefaultFileReadTimeout
	}
	if cfg.RecheckDelay <= 0 {
		cfg.RecheckDelay = 200 * time.Millisecond
	}
	r := &Resolver{
		cfg:       cfg,
		daemonEnv: envMap(cfg.Environ),
		readFile:  readBoundedFile,
		dotenvs:   map[string]*dotenvFile{},
		reads:     map[string]*dotenvRead{},
	}
	r.waitRecheck = func() { time.Sleep(r.cfg.RecheckDelay) }
	r.watchBL() // first: a change after the watch is set is seen, the read sees what came before
	r.loadBL()
	r.loadKeyring(ctx)
	return r
}

// watchBL starts watching the bl config if it is not watched yet. A watch refused for want of
// inotify watches is a source error until a later reload manages it.
func (r *Resolver) watchBL() {
	if r.cfg.Watcher == nil || r.cfg.BLConfigPath == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.blCancel != nil || r.closed {
		return
	}
	cancel, err := r.cfg.Watcher.Watch(r.cfg.BLConfigPath, func() {
		if r.loadBL() {
			r.changed(SourceBLConfig)
		}
	})
	if err != nil {
		r.blWatchErr = watchError(r.cfg.BLConfigPath, err, "is re-read only on reload")
		r.cfg.Log.Warn().Err(err).Str("path", r.cfg.BLConfigPath).Msg("cannot watch the bl config; it is re-read on reload only")
		return
	}
	r.blCancel, r.blWatchErr = cancel, nil
}

// watchError describes a refused watch; running out of inotify watches or instances is named as
// such, since only the administrator can fix it.
func watchError(path string, err error, consequence string) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE) {
		return fmt.Errorf("file watching is exhausted (fs.inotify.max_user_watches): %s %s", path, consequence)
	}
	return fmt.Errorf("cannot watch %s, so it %s: %w", path, consequence, err)
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
	r.closed = true
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

// Reload re-reads every source: the bl config, the keyring, and the cached .env files (each
// waited for at most FileReadTimeout). It also retries a watch of the bl config that was refused.
func (r *Resolver) Reload(ctx context.Context) {
	r.watchBL()
	r.loadBL()
	r.loadKeyring(ctx)
	r.mu.Lock()
	r.watchErr = nil // the next .env watch refused for want of inotify watches sets it again
	var started []*dotenvRead
	for _, f := range r.dotenvs {
		started = append(started, r.startDotenvReadLocked(f.path))
	}
	r.mu.Unlock()
	deadline := time.NewTimer(r.cfg.FileReadTimeout)
	defer deadline.Stop()
	for _, rd := range started {
		select {
		case <-rd.done:
		case <-deadline.C:
			return
		}
	}
}

// ReloadKeyring re-reads the keyring (after blauth-helper login or logout).
func (r *Resolver) ReloadKeyring(ctx context.Context) { r.loadKeyring(ctx) }

// loadBL reads the bl config. A torn or invalid file keeps the last good view and is retried
// with growing delays (bl rewrites it in place, so a reader may catch it half written). A file
// that is refused (unsafe permissions, not a regular file, too large) drops the view: its
// credentials are not served until it is fixed. It reports whether the view changed.
func (r *Resolver) loadBL() bool {
	path := r.cfg.BLConfigPath
	if path == "" {
		return false
	}
	r.blLoadMu.Lock()
	defer r.blLoadMu.Unlock()
	c, err := r.readBL(path)

	r.mu.Lock()
	defer r.mu.Unlock()
	if errors.Is(err, ErrBLConfigEmpty) && r.blTries >= 3 {
		// Still empty after the retries (well over a second): not a write in progress but a
		// file the user emptied. Believe it.
		c, err = &BLConfig{}, nil
	}
	if r.blRetry != nil {
		r.blRetry.Stop()
		r.blRetry = nil
	}
	if err != nil && (errors.Is(err, ErrUnsafeFile) || errors.Is(err, ErrFileRefused)) {
		// Not a write in progress: nothing to retry, and nothing of it may be served. The
		// watcher (or a reload) sees the fix.
		r.blErr, r.blTries = err, 0
		had := r.bl != nil
		r.bl = nil
		r.cfg.Log.Warn().Err(err).Msg("refusing the bl config; its credentials are not served")
		return had
	}
	if err != nil {
		r.blErr = fmt.Errorf("%s: %w", path, err)
		r.blTries++
		if r.blTries <= 8 && !r.closed {
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

// readBL reads, checks and parses the bl config. A file that parses but looks cut short is read
// again after RecheckDelay, and believed if nothing about it changed.
func (r *Resolver) readBL(path string) (*BLConfig, error) {
	data, fi, err := r.readBLFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &BLConfig{}, nil
	case err != nil:
		return nil, err
	}
	if err := checkBLConfigSafe(path, fi); err != nil {
		return nil, err
	}
	c, err := ParseBLConfig(data)
	if !errors.Is(err, ErrBLConfigMaybeTorn) {
		return c, err
	}
	r.waitRecheck()
	again, fi2, err2 := r.readBLFile(path)
	if err2 != nil || !bytes.Equal(again, data) || !sameFileState(fi, fi2) {
		return nil, err // changing: a write in progress
	}
	r.cfg.Log.Info().Str("path", path).Str("note", err.Error()).
		Msg("the bl config looks cut short but did not change when read again; using it as written by hand")
	return c, nil
}

func (r *Resolver) readBLFile(path string) ([]byte, os.FileInfo, error) {
	return startFileRead(path, MaxBLConfigBytes, r.readFile).wait(path, r.cfg.FileReadTimeout)
}

// sameFileState reports whether two fstats show the same file, unchanged: same inode, size and
// modification time.
func sameFileState(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
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

// SourceErrors returns the problems of the sources the daemon holds itself, each once: the bl
// config (unreadable, invalid, cut short, refused as unsafe, not watched), the keyring
// (unavailable), file watching (exhausted). A request's own .env problems are in its
// Resolution.Errors instead. No error holds a secret.
func (r *Resolver) SourceErrors() []SourceError {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []SourceError
	bl := Provenance{SourceBLConfig, r.cfg.BLConfigPath}
	if r.blErr != nil {
		out = append(out, SourceError{bl, r.blErr.Error()})
	}
	if r.blWatchErr != nil {
		out = append(out, SourceError{bl, r.blWatchErr.Error()})
	}
	if r.ringErr != nil {
		out = append(out, SourceError{Provenance{SourceKeyring, DefaultKeyringService}, r.ringErr.Error()})
	}
	if r.watchErr != nil {
		out = append(out, SourceError{Provenance{SourceDotenv, ""}, r.watchErr.Error()})
	}
	return out
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
	// Errors are the problems of the request's own sources (its .env: broken lines, or why it
	// cannot be read). The daemon-held sources' problems are in Resolver.SourceErrors.
	Errors []SourceError
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
	// ErrSource means one of the request's own sources exists but cannot be read (a .env that is
	// unreadable, a FIFO, a device, a directory, too large, or too slow): the request fails
	// rather than being served by a lower-ranked source the caller did not mean. The error names
	// the path and the reason.
	ErrSource = errors.New("a credential source cannot be read")
)

// layer is one environment-like source: a .env file, the caller's or the daemon's environment.
type layer struct {
	kind, where string
	vars        map[string]string
}

// Resolve decides which credential serves req, following the precedence in docs/SOURCES.md:
// the caller's .env, the caller's environment, the daemon's environment, the keyring, the bl
// config. It returns ErrNoWorkspace or ErrNoCredentials (wrapped, with the reason) when nothing
// can serve, and ErrSource when the caller's .env exists but cannot be read. The Resolution is
// never nil.
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
			return res, fmt.Errorf("%w: %w; fix or remove it (no other source is used while the caller's .env cannot be read)", ErrSource, f.readErr)
		}
	}
	if len(req.Env) > 0 {
		layers = append(layers, layer{SourceCallerEnv, "", req.Env})
	}
	callerLayers := len(layers)
	layers = append(layers, layer{SourceDaemonEnv, "", r.daemonEnv})

	r.mu.RLock()
	bl, ring := r.bl, r.ring
	r.mu.RUnlock()

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

// dotenv returns the view of the .env at path: from the cache when it is watched and was read
// already (a hit takes only the read lock: every request that sends its directory passes here),
// else from a read shared with every other request for the same path. It waits for the read at
// most FileReadTimeout; the read is never done under the lock.
func (r *Resolver) dotenv(path string) dotenvView {
	now := time.Now()
	dir := filepath.Dir(path)
	if r.cfg.Watcher != nil {
		r.mu.RLock()
		if f := r.dotenvs[dir]; f != nil && f.loaded {
			v := f.view()
			f.lastUsed.Store(now.UnixNano())
			r.mu.RUnlock()
			return v
		}
		r.mu.RUnlock()
	}

	r.mu.Lock()
	var minGen uint64 // a read started before this generation cannot serve
	if r.cfg.Watcher != nil && !r.closed {
		f := r.dotenvs[dir]
		if f == nil {
			r.evictLocked(now)
			f = &dotenvFile{path: path, gen: r.readGen}
			// Watch first, read after: a change after the watch is set is seen, and the read
			// sees everything before it.
			cancel, err := r.cfg.Watcher.Watch(path, func() { r.dotenvChanged(dir, f) })
			if err == nil {
				f.cancel = cancel
				r.dotenvs[dir] = f
			} else {
				r.noteDotenvWatchErrLocked(path, err)
				f = nil // not cached: read it for this request, as without a watcher
			}
		}
		if f != nil {
			f.lastUsed.Store(now.UnixNano())
			if f.loaded {
				v := f.view()
				r.mu.Unlock()
				return v
			}
			minGen = f.gen + 1
		}
	}
	rd := r.reads[path]
	if rd == nil || rd.gen < minGen {
		rd = r.startDotenvReadLocked(path)
	}
	r.mu.Unlock()

	t := time.NewTimer(r.cfg.FileReadTimeout)
	defer t.Stop()
	select {
	case <-rd.done:
		return rd.view
	case <-t.C:
		return dotenvView{path: path, readErr: &readTimeoutError{path, r.cfg.FileReadTimeout}}
	}
}

// noteDotenvWatchErrLocked records a .env watch refused for want of inotify watches (the file is
// then read on every request instead of being cached), to be shown once among the source errors.
func (r *Resolver) noteDotenvWatchErrLocked(path string, err error) {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE) {
		if r.watchErr == nil {
			r.cfg.Log.Warn().Err(err).Str("path", path).Msg("file watching is exhausted; .env files are read on every request")
		}
		r.watchErr = fmt.Errorf("file watching is exhausted (fs.inotify.max_user_watches): .env files such as %s are read on every request instead of being cached", path)
		return
	}
	r.cfg.Log.Debug().Err(err).Str("path", path).Msg("cannot watch a .env; it is read on every request")
}

// startDotenvReadLocked starts a read of the .env at path with a new generation and makes it the
// one later requests for path share. When it ends, its outcome is installed in the cached entry
// for path, unless a read started later has installed its own already. r.mu is held.
func (r *Resolver) startDotenvReadLocked(path string) *dotenvRead {
	r.readGen++
	rd := &dotenvRead{gen: r.readGen, done: make(chan struct{})}
	r.reads[path] = rd
	fr := startFileRead(path, MaxDotenvBytes, r.readFile)
	go func() {
		<-fr.done
		v := dotenvView{path: path}
		switch {
		case errors.Is(fr.err, fs.ErrNotExist):
			// No .env: nothing to read, not an error.
		case fr.err != nil:
			v.readErr = fr.err
		default:
			v.vars, v.errs = ParseDotenv(fr.data)
		}
		r.mu.Lock()
		if r.reads[path] == rd {
			delete(r.reads, path)
		}
		if f := r.dotenvs[filepath.Dir(path)]; f != nil && f.path == path && rd.gen > f.gen {
			f.vars, f.errs, f.readErr = v.vars, v.errs, v.readErr
			f.gen, f.loaded = rd.gen, true
		}
		rd.view = v
		close(rd.done)
		r.mu.Unlock()
	}()
	return rd
}

// dotenvChanged is the watcher's call for a cached .env: read it again, in the background (the
// watcher's goroutine must not wait on a file), and report the change once the read is in.
func (r *Resolver) dotenvChanged(dir string, f *dotenvFile) {
	r.mu.Lock()
	if r.dotenvs[dir] != f {
		r.mu.Unlock()
		return
	}
	rd := r.startDotenvReadLocked(f.path) // a fresh read: any read in flight may predate the change
	r.mu.Unlock()
	go func() {
		<-rd.done
		r.changed(SourceDotenv)
	}()
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
