package dotenv

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/watch"
)

// Name is the file read from a caller's directory.
const Name = ".env"

// CacheConfig configures a DotenvCache. Zero fields take the defaults noted.
type CacheConfig struct {
	// Name is the file read in each directory (Name, .env). The same cache holds another
	// per-directory file (blaxel.toml) with its own Parse.
	Name string
	// Parse reads the file's variables and the line of each (the .env parser, ParseLines).
	// Another file maps what it holds onto names and values, and its errors onto lines.
	Parse func(data []byte) (vars map[string]string, lines map[string]int, errs []Error)
	// Watcher reports file changes; nil means every Get reads the file.
	Watcher *watch.Watcher
	// MaxDirs bounds how many callers' .env files are cached and watched (64); the least
	// recently used is dropped first.
	MaxDirs int
	// Idle drops a cached .env nobody asked for in this long (10m), at Sweep or when room is made.
	Idle time.Duration
	// ReadTimeout bounds how long Get waits for one read (sources.DefaultFileReadTimeout). A read that
	// takes longer goes on in the background and its outcome is cached when it ends.
	ReadTimeout time.Duration
	// Clock tells idle time (the wall clock when nil).
	Clock clock.Clock
	// OnChange is called after a watched .env changed and was read again.
	OnChange func()
	Log      zerolog.Logger
}

// View is what a request reads of a caller's .env.
type View struct {
	Path    string
	Vars    map[string]string // nil when the file does not exist
	Lines   map[string]int    // the line of each variable's assignment
	Errs    []Error           // broken lines; the rest counts
	ReadErr error             // why the file exists but cannot be read
	// Cached says the view came from a watched entry already read: until Generation moves,
	// Get(dir) returns this same view.
	Cached bool
}

// Cache holds the callers' .env files, read once, watched, and dropped when idle. Safe for
// concurrent use.
//
// No file is read under the cache's lock: a read runs first, in its own goroutine and bounded in
// time, and its outcome is installed under the lock afterwards, unless a read started later has
// already installed a newer one (each read has a generation number). Concurrent requests for a
// .env nobody has read yet share one read.
type Cache struct {
	cfg      CacheConfig
	readFile func(path string, limit int64) ([]byte, fs.FileInfo, error) // tests replace it

	mu       sync.RWMutex
	files    map[string]*dotenvFile // by directory
	reads    map[string]*dotenvRead // the latest read in flight, by path
	readGen  uint64                 // generation of the latest read started
	watchErr error                  // the last watch refused for want of inotify watches
	closed   bool
	// gen moves whenever an entry's view is installed or an entry is dropped: what a Get
	// returned as Cached is still what it returns while gen stays.
	gen atomic.Uint64
}

// dotenvFile is a cached, watched .env. Its view changes only under the write lock; lastUsed is
// updated under the read lock, hence atomic.
type dotenvFile struct {
	path     string
	loaded   bool   // a read has been installed
	gen      uint64 // generation of the installed read; reads older than the watch are not installed
	view     View
	lastUsed atomic.Int64 // UnixNano
	cancel   func()
}

// dotenvRead is one read of a .env, shared by every request waiting for it.
type dotenvRead struct {
	gen  uint64
	done chan struct{} // closed once view is set
	view View
}

// NewCache returns an empty cache.
func NewCache(cfg CacheConfig) *Cache {
	cfg.Name = cmp.Or(cfg.Name, Name)
	if cfg.Parse == nil {
		cfg.Parse = ParseLines
	}
	if cfg.MaxDirs <= 0 {
		cfg.MaxDirs = 64
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 10 * time.Minute
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = sources.DefaultFileReadTimeout
	}
	cfg.Clock = cmp.Or[clock.Clock](cfg.Clock, clock.Wall{})
	return &Cache{cfg: cfg, readFile: sources.ReadBounded, files: map[string]*dotenvFile{}, reads: map[string]*dotenvRead{}}
}

// Get returns the view of the .env in dir: from the cache when it is watched and was read
// already (a hit takes only the read lock: every request that sends its directory passes here),
// else from a read shared with every other request for the same path. It waits for the read at
// most ReadTimeout.
func (c *Cache) Get(dir string) View {
	// A hit is looked up before the file's path is built, and under dir as sent first: the
	// entries are under clean directories, which most callers send, so most hits cost neither an
	// allocation nor a walk of the path.
	now := c.cfg.Clock.Now()
	if c.cfg.Watcher != nil {
		c.mu.RLock()
		f := c.files[dir]
		if f == nil {
			if clean := filepath.Clean(dir); clean != dir {
				f = c.files[clean]
			}
		}
		if f != nil && f.loaded {
			v := f.view
			f.lastUsed.Store(now.UnixNano())
			c.mu.RUnlock()
			v.Cached = true
			return v
		}
		c.mu.RUnlock()
	}
	path := filepath.Join(filepath.Clean(dir), c.cfg.Name)
	dir = filepath.Dir(path)
	c.mu.Lock()
	f, minGen := c.cachedLocked(dir, path, now)
	if f != nil && f.loaded {
		v := f.view
		c.mu.Unlock()
		v.Cached = true
		return v
	}
	rd := c.reads[path]
	if rd == nil || rd.gen < minGen {
		rd = c.startReadLocked(path)
	}
	c.mu.Unlock()

	t := time.NewTimer(c.cfg.ReadTimeout)
	defer t.Stop()
	select {
	case <-rd.done:
		return rd.view
	case <-t.C:
		return View{Path: path, ReadErr: sources.ReadTimeout(path, c.cfg.ReadTimeout)}
	}
}

// cachedLocked finds or makes the cache entry of dir, watching the file first: a change after
// the watch is set is seen, and the read that follows sees everything before it. It returns nil
// when nothing is cached (no watcher, or the watch was refused), and the generation a read must
// have to serve the entry. c.mu is held.
func (c *Cache) cachedLocked(dir, path string, now time.Time) (*dotenvFile, uint64) {
	if c.cfg.Watcher == nil || c.closed {
		return nil, 0
	}
	f := c.files[dir]
	if f == nil {
		c.evictLocked(now)
		f = &dotenvFile{path: path, gen: c.readGen}
		cancel, err := c.cfg.Watcher.Watch(path, func() { c.changed(dir, f) })
		if err != nil {
			c.noteWatchErrLocked(path, err)
			return nil, 0 // not cached: read it for this request, as without a watcher
		}
		f.cancel = cancel
		c.files[dir] = f
	}
	f.lastUsed.Store(now.UnixNano())
	return f, f.gen + 1
}

// noteWatchErrLocked records a watch refused for want of inotify watches (the file is then read
// on every request instead of being cached), to be shown once among the source errors.
func (c *Cache) noteWatchErrLocked(path string, err error) {
	if watch.Exhausted(err) {
		if c.watchErr == nil {
			c.cfg.Log.Warn().Err(err).Str("path", path).Str("file", c.cfg.Name).Msg("file watching is exhausted; these files are read on every request")
		}
		c.watchErr = fmt.Errorf("file watching is exhausted (fs.inotify.max_user_watches): %s files such as %s are read on every request instead of being cached", c.cfg.Name, path)
		return
	}
	c.cfg.Log.Debug().Err(err).Str("path", path).Msg("cannot watch a per-directory file; it is read on every request")
}

// startReadLocked starts a read of the .env at path with a new generation and makes it the one
// later requests for path share. When it ends, its outcome is installed in the cached entry for
// path, unless a read started later has installed its own already. c.mu is held.
func (c *Cache) startReadLocked(path string) *dotenvRead {
	c.readGen++
	rd := &dotenvRead{gen: c.readGen, done: make(chan struct{})}
	c.reads[path] = rd
	read, parse := c.readFile, c.cfg.Parse
	go func() {
		data, _, err := read(path, sources.MaxDotenvBytes)
		v := View{Path: path}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// No .env: nothing to read, not an error.
		case err != nil:
			v.ReadErr = err
		default:
			v.Vars, v.Lines, v.Errs = parse(data)
		}
		c.mu.Lock()
		if c.reads[path] == rd {
			delete(c.reads, path)
		}
		if f := c.files[filepath.Dir(path)]; f != nil && f.path == path && rd.gen > f.gen {
			f.view, f.gen, f.loaded = v, rd.gen, true
			c.gen.Add(1)
		}
		rd.view = v
		close(rd.done)
		c.mu.Unlock()
	}()
	return rd
}

// changed is the watcher's call for a cached .env: read it again, in the background (the
// watcher's goroutine must not wait on a file), and report the change once the read is in.
func (c *Cache) changed(dir string, f *dotenvFile) {
	c.mu.Lock()
	if c.files[dir] != f {
		c.mu.Unlock()
		return
	}
	rd := c.startReadLocked(f.path) // a fresh read: any read in flight may predate the change
	c.mu.Unlock()
	go func() {
		<-rd.done
		if c.cfg.OnChange != nil {
			c.cfg.OnChange()
		}
	}()
}

// Reload reads every cached .env again, waiting for them at most ReadTimeout in all, and forgets
// a watch refused for want of inotify watches (the next refusal records it again).
func (c *Cache) Reload() {
	c.mu.Lock()
	c.watchErr = nil
	var started []*dotenvRead
	for _, f := range c.files {
		started = append(started, c.startReadLocked(f.path))
	}
	c.mu.Unlock()
	deadline := time.NewTimer(c.cfg.ReadTimeout)
	defer deadline.Stop()
	for _, rd := range started {
		select {
		case <-rd.done:
		case <-deadline.C:
			return
		}
	}
}

// evictLocked makes room for one more .env: idle ones go, then the least recently used.
func (c *Cache) evictLocked(now time.Time) {
	c.dropIdleLocked(now)
	for len(c.files) >= c.cfg.MaxDirs {
		var oldest string
		var t int64
		for dir, f := range c.files {
			if used := f.lastUsed.Load(); oldest == "" || used < t {
				oldest, t = dir, used
			}
		}
		c.dropLocked(oldest)
	}
}

func (c *Cache) dropIdleLocked(now time.Time) {
	for dir, f := range c.files {
		if now.Sub(time.Unix(0, f.lastUsed.Load())) > c.cfg.Idle {
			c.dropLocked(dir)
		}
	}
}

func (c *Cache) dropLocked(dir string) {
	f := c.files[dir]
	if f == nil {
		return
	}
	if f.cancel != nil {
		f.cancel()
	}
	delete(c.files, dir)
	c.gen.Add(1)
}

// Generation moves whenever what Get returns as Cached may have changed: a cached file was read
// again, or dropped (idle, evicted, closed).
func (c *Cache) Generation() uint64 { return c.gen.Load() }

// Sweep drops the .env files nobody asked for within Idle.
func (c *Cache) Sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropIdleLocked(c.cfg.Clock.Now())
}

// Len returns how many .env files are cached and watched.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.files)
}

// Err is why .env files are not all watched (inotify exhausted), or nil.
func (c *Cache) Err() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.watchErr
}

// Close stops watching and empties the cache.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for dir := range c.files {
		c.dropLocked(dir)
	}
}
