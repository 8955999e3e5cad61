package blconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/watch"
	"github.com/rs/zerolog"
)

// DefaultPath is $HOME/.blaxel/config.yaml, where every Blaxel tool keeps it.
func DefaultPath(home string) string { return filepath.Join(home, ".blaxel", "config.yaml") }

// SourceConfig configures a BLSource. Zero fields take the defaults noted.
type SourceConfig struct {
	// Path is the bl CLI config, normally $HOME/.blaxel/config.yaml.
	Path string
	// Watcher reports changes of the file; nil means it is read again only on Reload.
	Watcher *watch.Watcher
	// ReadTimeout bounds one read of the file (sources.DefaultFileReadTimeout).
	ReadTimeout time.Duration
	// RecheckDelay is how long to wait before reading again a file that parses but looks cut
	// short, to tell a write in progress from a file written by hand (200ms).
	RecheckDelay time.Duration
	// OnChange is called when a change of the file changed the view.
	OnChange func()
	Log      zerolog.Logger
}

// Source is the bl CLI config as the daemon sees it: the last good view of the file, read
// again whenever it changes. A torn or invalid file keeps the last good view and is retried with
// growing delays (bl rewrites it in place, so a reader may catch it half written); a file that
// is refused (unsafe permissions, not a regular file, too large) drops the view, so that none of
// its credentials is served until it is fixed. Safe for concurrent use.
type Source struct {
	cfg SourceConfig
	// waitRecheck waits RecheckDelay. Tests replace it.
	waitRecheck func()

	// loadMu serialises the reads (watcher, retry timer, Reload): the last read is the one
	// installed. Readers of the view never take it.
	loadMu sync.Mutex

	mu       sync.RWMutex
	view     *View                   // last good view; nil when there is none (or it was dropped as unsafe)
	unknown  map[string][]UnknownKey // the view's misspelt credentials keys, by workspace
	err      error                   // the last read's error, nil when the view is current
	retry    *time.Timer
	tries    int
	cancel   func()
	watchErr error // why the file is not watched; nil when it is (or there is no watcher)
	closed   bool
}

// NewSource watches and reads the bl config once.
func NewSource(cfg SourceConfig) *Source {
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = sources.DefaultFileReadTimeout
	}
	if cfg.RecheckDelay <= 0 {
		cfg.RecheckDelay = 200 * time.Millisecond
	}
	s := &Source{cfg: cfg}
	s.waitRecheck = func() { time.Sleep(s.cfg.RecheckDelay) }
	s.watch() // first: a change after the watch is set is seen, the read sees what came before
	s.load()
	return s
}

// View is a good read of the bl config: its Config, and its workspaces indexed by name, so
// that finding one costs the same with 20,000 workspaces as with 10 (status resolves every
// workspace: with a search through the list, it took time in the square of their number).
type View struct {
	*Config
	byName map[string]int // the first entry of each name, as Config.Workspace finds it
}

func newView(c *Config) *View {
	v := &View{Config: c, byName: make(map[string]int, len(c.Workspaces))}
	for i, w := range c.Workspaces {
		if _, dup := v.byName[w.Name]; !dup {
			v.byName[w.Name] = i
		}
	}
	return v
}

// Workspace is Config.Workspace, from the index.
func (v *View) Workspace(name string) (*Workspace, bool) {
	i, ok := v.byName[name]
	if !ok {
		return nil, false
	}
	return &v.Workspaces[i], true
}

// View is the last good view of the file, nil when there is none. It must not be modified.
func (s *Source) View() *View {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.view
}

// Path is the file.
func (s *Source) Path() string { return s.cfg.Path }

// UnknownKeys are the keys of workspace's credentials in the last good view that no Blaxel tool
// reads (BLUnknownKeys), nil when there are none.
func (s *Source) UnknownKeys(workspace string) []UnknownKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.unknown[workspace]
}

// Errors says why the view is not the file as it is now, or why the file is not watched.
func (s *Source) Errors() []sources.SourceError {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []sources.SourceError
	p := sources.Provenance{Kind: sources.SourceBLConfig, Where: s.cfg.Path}
	if s.err != nil {
		out = append(out, sources.SourceError{Source: p, Error: s.err.Error()})
	}
	if s.watchErr != nil {
		out = append(out, sources.SourceError{Source: p, Error: s.watchErr.Error()})
	}
	return out
}

// Reload retries a refused watch and reads the file again.
func (s *Source) Reload() {
	s.watch()
	s.load()
}

// Close stops watching and retrying.
func (s *Source) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	if s.retry != nil {
		s.retry.Stop()
	}
}

// watch starts watching the file if it is not watched yet. A watch refused for want of inotify
// watches is a source error until a later reload manages it.
func (s *Source) watch() {
	if s.cfg.Watcher == nil || s.cfg.Path == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil || s.closed {
		return
	}
	cancel, err := s.cfg.Watcher.Watch(s.cfg.Path, s.loadAndTell)
	if err != nil {
		// Running out of inotify watches or instances is named as such: only the administrator can fix it.
		s.watchErr = fmt.Errorf("cannot watch %s, so it is re-read only on reload: %w", s.cfg.Path, err)
		if watch.Exhausted(err) {
			s.watchErr = fmt.Errorf("file watching is exhausted (fs.inotify.max_user_watches): %s is re-read only on reload", s.cfg.Path)
		}
		s.cfg.Log.Warn().Err(err).Str("path", s.cfg.Path).Msg("cannot watch the bl config; it is re-read on reload only")
		return
	}
	s.cancel, s.watchErr = cancel, nil
}

func (s *Source) loadAndTell() {
	if s.load() && s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
}

// load reads the file and installs what it read; it reports whether the view changed.
func (s *Source) load() bool {
	path := s.cfg.Path
	if path == "" {
		return false
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	c, unknown, err := s.read(path)

	s.mu.Lock()
	defer s.mu.Unlock()
	if errors.Is(err, ErrEmpty) && s.tries >= 3 {
		// Still empty after the retries (well over a second): not a write in progress but a
		// file the user emptied. Believe it.
		c, err = &Config{}, nil
	}
	if s.retry != nil {
		s.retry.Stop()
		s.retry = nil
	}
	switch {
	case err != nil && (errors.Is(err, ErrUnsafeFile) || errors.Is(err, sources.ErrFileRefused)):
		// Not a write in progress: nothing to retry, and nothing of it may be served. The
		// watcher (or a reload) sees the fix.
		s.err, s.tries = err, 0
		had := s.view != nil
		s.view, s.unknown = nil, nil
		s.cfg.Log.Warn().Err(err).Msg("refusing the bl config; its credentials are not served")
		return had
	case err != nil:
		s.err = fmt.Errorf("%s: %w", path, err)
		s.tries++
		if s.tries <= 8 && !s.closed {
			s.retry = time.AfterFunc(time.Duration(50<<s.tries)*time.Millisecond, s.loadAndTell)
		}
		s.cfg.Log.Warn().Err(err).Str("path", path).Msg("cannot read the bl config; keeping the last good view")
		return false
	}
	s.tries, s.err = 0, nil
	// The unknown keys count too: a request's warnings come from them.
	same := s.view != nil && s.view.Equal(c) && maps.EqualFunc(s.unknown, unknown, slices.Equal[[]UnknownKey])
	s.view, s.unknown = newView(c), unknown
	return !same
}

// read reads, checks and parses the file. A file that parses but looks cut short is read again
// after RecheckDelay, and believed if nothing about it changed.
// It also returns the misspelt credentials keys of what it parsed (BLUnknownKeys).
func (s *Source) read(path string) (*Config, map[string][]UnknownKey, error) {
	data, fi, err := s.readOnce(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &Config{}, nil, nil
	case err != nil:
		return nil, nil, err
	}
	if err := checkBLConfigSafe(path, fi); err != nil {
		return nil, nil, err
	}
	c, err := Parse(data)
	if !errors.Is(err, ErrMaybeTorn) {
		if err != nil {
			return c, nil, err
		}
		return c, UnknownKeys(data), nil
	}
	if !sameOnRecheck(data, fi, s.waitRecheck, func() ([]byte, fs.FileInfo, error) { return s.readOnce(path) }) {
		return nil, nil, err // changing: a write in progress
	}
	s.cfg.Log.Info().Str("path", path).Str("note", err.Error()).
		Msg("the bl config looks cut short but did not change when read again; using it as written by hand")
	return c, UnknownKeys(data), nil
}

func (s *Source) readOnce(path string) ([]byte, fs.FileInfo, error) {
	return sources.ReadWithin(path, sources.MaxBLConfigBytes, s.cfg.ReadTimeout)
}

// sameOnRecheck waits, reads the file again, and reports whether it still holds data and is the
// same file, unchanged (fi was the fstat of the first read): a file that looks cut short is
// believed when it reads the same twice, since bl's truncate and write are microseconds apart.
func sameOnRecheck(data []byte, fi fs.FileInfo, wait func(), read func() ([]byte, fs.FileInfo, error)) bool {
	wait()
	again, fi2, err := read()
	return err == nil && bytes.Equal(again, data) && sameFileState(fi, fi2)
}

// sameFileState reports whether two fstats show the same file, unchanged: same inode, size and
// modification time.
func sameFileState(a, b fs.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
