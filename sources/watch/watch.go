package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

const (
	// defaultWatchDebounce is the quiet time NewWatcher uses when given 0.
	defaultWatchDebounce = 50 * time.Millisecond
	// watchMaxDelayFactor bounds the debounce: a file that keeps changing is still reported every
	// watchMaxDelayFactor × debounce.
	watchMaxDelayFactor = 4
	// watchMaxSymlinkHops is how many symlinks one path may go through, as in Linux (ELOOP).
	watchMaxSymlinkHops = 40
	// watchMaxArmRounds bounds how often arm re-resolves a path whose directories keep changing
	// while it sets up the watches.
	watchMaxArmRounds = 8
)

var errWatcherClosed = errors.New("the file watcher has stopped")

// Watcher reports changes to individual files by watching their parent directories with one
// fsnotify watcher, debounced per file. Safe for concurrent use. The zero value is not usable:
// use NewWatcher, then Run.
//
// Watching directories rather than files is what makes replaced files visible: editors save
// by renaming a new file over the old one and bl truncates and rewrites in place, and only the
// directory sees both.
type Watcher struct {
	log      zerolog.Logger
	debounce time.Duration
	maxDelay time.Duration
	fsw      *fsnotify.Watcher

	mu sync.Mutex
	// addDir adds an inotify watch (fsw.Add); tests make it fail as an exhausted system does.
	addDir  func(dir string) error
	dirs    map[string]*dirWatch   // directory (free of symlinks) → its watch
	regs    map[*watchReg]struct{} // live registrations
	pending map[*watchReg]struct{} // registrations with a call due
	running bool                   // Run has been called
	closed  bool                   // Run has returned; fsw is closed
}

// dirWatch is one watched directory, shared by every registration that needs it.
type dirWatch struct {
	// fi identifies the directory that was watched, to find directories replaced while events
	// were lost (queue overflow).
	fi   os.FileInfo
	refs int // how many registrations' entries name this directory
	// names maps an entry name to the registrations that care about it; events for any other
	// name are dropped after two map lookups.
	names map[string]map[*watchReg]struct{}
}

// watchedEntry is one directory entry whose change can change what a watched path refers to.
type watchedEntry struct{ dir, name string }

// watchReg is one Watch call.
type watchReg struct {
	path     string // absolute, clean
	onChange func()
	canceled atomic.Bool

	// Guarded by Watcher.mu. entries is what the path resolves through now; each entry holds
	// a reference on its directory's watch.
	entries []watchedEntry
	first   time.Time // first event of the burst being debounced (while pending)
	due     time.Time // when onChange is to be called (while pending)
}

// New returns a watcher whose onChange calls wait for debounce of quiet after the last
// event (50ms when debounce is 0). Nothing is reported until Run is called.
func New(log zerolog.Logger, debounce time.Duration) (*Watcher, error) {
	if debounce < 0 {
		return nil, fmt.Errorf("creating the file watcher: negative debounce %v", debounce)
	}
	if debounce == 0 {
		debounce = defaultWatchDebounce
	}
	fsw, err := fsnotify.NewWatcher()
	if errors.Is(err, syscall.EMFILE) {
		return nil, fmt.Errorf("creating the file watcher (raise fs.inotify.max_user_instances): %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the file watcher: %w", err)
	}
	return &Watcher{
		log:      log,
		debounce: debounce,
		maxDelay: watchMaxDelayFactor * debounce,
		fsw:      fsw,
		addDir:   fsw.Add,
		dirs:     map[string]*dirWatch{},
		regs:     map[*watchReg]struct{}{},
		pending:  map[*watchReg]struct{}{},
	}, nil
}

// Watch calls onChange whenever the file at path may have changed: written in place,
// truncated, created, removed, renamed over (editors' rename-saves: vim's backup and rename,
// VS Code's and JetBrains' temporary file and rename), deleted and recreated, or chmod'ed. If
// path, or any directory on the way to it, is a symlink, a change of the link or of what it
// points to is reported too, and the link is resolved again after each change, since it may now
// point elsewhere. If the file's directory (or several levels of it) does not exist yet, Watch
// watches the nearest existing ancestor and follows the directories down as they appear, calling
// onChange when the file appears.
//
// onChange is called on Run's goroutine, never concurrently, after debounce of quiet following
// the last event for this file, but no later than 4 × debounce after the first event of a burst,
// so that a file written continuously is still reported. Events that arrive while onChange runs
// lead to another call, so the last call always starts after the last change. onChange must not
// block for long (events queue up behind it); it may call Watch and cancel funcs.
//
// Watch does not call onChange for the state the file is in when Watch returns: read the file
// after Watch returns. The returned cancel stops this registration and drops the directory
// watches that no other registration needs (they are reference counted). After cancel returns,
// onChange is not called again, except for a call Run had already begun: cancel does not wait
// for it, so cancel may be called from onChange itself or while holding a lock onChange takes.
// cancel may be called more than once. Watching the same path twice gives two independent
// registrations.
func (w *Watcher) Watch(path string, onChange func()) (cancel func(), err error) {
	if onChange == nil {
		return nil, fmt.Errorf("watching %s: onChange is nil", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", path, err)
	}
	if filepath.Dir(abs) == abs {
		return nil, fmt.Errorf("watching %s: cannot watch a file system root", path)
	}
	r := &watchReg{path: abs, onChange: onChange}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, fmt.Errorf("watching %s: %w", path, errWatcherClosed)
	}
	if err := w.arm(r); err != nil {
		w.releaseAll(r)
		return nil, fmt.Errorf("watching %s: %w", path, err)
	}
	w.regs[r] = struct{}{}
	w.log.Debug().Str("path", abs).Int("dirs", len(w.dirs)).Msg("watching file")
	return func() { w.cancel(r) }, nil
}

func (w *Watcher) cancel(r *watchReg) {
	if r.canceled.Swap(true) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releaseAll(r)
	delete(w.regs, r)
	delete(w.pending, r)
	w.log.Debug().Str("path", r.path).Int("dirs", len(w.dirs)).Msg("stopped watching file")
}

// WatchedDirs returns how many directories are watched now (for tests and status).
func (w *Watcher) WatchedDirs() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.dirs)
}

// Run processes events until ctx is done, then closes the fsnotify watcher and returns nil; it
// may be called only once, and Watch fails after it has returned. Errors from fsnotify are
// logged; after a queue overflow (events were lost), every registered onChange is called once,
// since anything may have changed.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.running {
		w.mu.Unlock()
		return errors.New("running the file watcher: Run was already called")
	}
	w.running = true
	w.mu.Unlock()
	defer w.close()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var due <-chan time.Time
		if next, ok := w.nextDue(); ok {
			timer.Reset(time.Until(next)) // Go ≥ 1.23: no stale tick survives Reset
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return errors.New("running the file watcher: fsnotify stopped unexpectedly")
			}
			w.handle(ev)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return errors.New("running the file watcher: fsnotify stopped unexpectedly")
			}
			w.handleError(err)
		case <-due:
			w.fireDue()
		}
	}
}

func (w *Watcher) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if err := w.fsw.Close(); err != nil {
		w.log.Debug().Err(err).Msg("closing the file watcher")
	}
	for r := range w.regs {
		r.entries = nil
	}
	clear(w.dirs)
	clear(w.pending)
}

// handle routes one fsnotify event to the registrations that care about its name.
func (w *Watcher) handle(ev fsnotify.Event) {
	name := filepath.Clean(ev.Name)
	structural := ev.Op&(fsnotify.Create|fsnotify.Remove|fsnotify.Rename) != 0

	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	var rearm []*watchReg
	if ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 {
		if dw, ok := w.dirs[name]; ok {
			// A watched directory went away: fsnotify has dropped (or is about to drop) its
			// watch, so it must be set up again, on whatever now has that name.
			w.log.Debug().Str("dir", name).Stringer("op", ev.Op).Msg("watched directory went away")
			rearm = w.dropDir(name, dw, rearm)
		}
	}
	if dw, ok := w.dirs[filepath.Dir(name)]; ok {
		for r := range dw.names[filepath.Base(name)] {
			w.schedule(r, now)
			// Writes and chmods cannot change what the path resolves to; anything else may
			// have replaced a symlink or made a missing directory appear.
			if structural && !slices.Contains(rearm, r) {
				rearm = append(rearm, r)
			}
		}
	}
	for _, r := range rearm {
		if err := w.arm(r); err != nil {
			w.log.Debug().Err(err).Str("path", r.path).Msg("cannot re-arm the watch; changes may be missed until the next event")
		}
		w.schedule(r, now)
	}
}

func (w *Watcher) handleError(err error) {
	if !errors.Is(err, fsnotify.ErrEventOverflow) {
		w.log.Debug().Err(err).Msg("file watcher error")
		return
	}
	w.log.Debug().Err(err).Msg("file watcher lost events; reporting every watched file")
	w.mu.Lock()
	defer w.mu.Unlock()
	// Events that would have shown a directory being replaced may be among the lost ones.
	for dir, dw := range w.dirs {
		if fi, err := os.Stat(dir); err != nil || !os.SameFile(fi, dw.fi) {
			w.dropDir(dir, dw, nil) // every registration is re-armed below
		}
	}
	now := time.Now()
	for r := range w.regs {
		if err := w.arm(r); err != nil {
			w.log.Debug().Err(err).Str("path", r.path).Msg("cannot re-arm the watch; changes may be missed until the next event")
		}
		w.schedule(r, now)
	}
}

// dropDir forgets a directory watch whose directory is gone, taking it out of every
// registration that used it, and returns those registrations added to rearm.
func (w *Watcher) dropDir(dir string, dw *dirWatch, rearm []*watchReg) []*watchReg {
	delete(w.dirs, dir)
	if err := w.fsw.Remove(dir); err != nil && !errors.Is(err, fsnotify.ErrNonExistentWatch) {
		// The kernel drops the watch of a deleted directory on its own (EINVAL here).
		w.log.Debug().Err(err).Str("dir", dir).Msg("removing a directory watch")
	}
	for _, regs := range dw.names {
		for r := range regs {
			r.entries = slices.DeleteFunc(r.entries, func(p watchedEntry) bool { return p.dir == dir })
			if !slices.Contains(rearm, r) {
				rearm = append(rearm, r)
			}
		}
	}
	return rearm
}

// schedule (re)starts r's debounce: the call comes debounce after the last event, but no
// later than maxDelay after the first event of the burst.
func (w *Watcher) schedule(r *watchReg, now time.Time) {
	if _, ok := w.pending[r]; !ok {
		w.pending[r] = struct{}{}
		r.first = now
	}
	r.due = now.Add(w.debounce)
	if limit := r.first.Add(w.maxDelay); r.due.After(limit) {
		r.due = limit
	}
}

func (w *Watcher) nextDue() (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var next time.Time
	for r := range w.pending {
		if next.IsZero() || r.due.Before(next) {
			next = r.due
		}
	}
	return next, !next.IsZero()
}

// fireDue calls, in due order, every onChange whose time has come. Events that arrive during a
// call schedule another one, so the last call always follows the last change.
func (w *Watcher) fireDue() {
	now := time.Now()
	w.mu.Lock()
	var due []*watchReg
	for r := range w.pending {
		if !r.due.After(now) {
			due = append(due, r)
			delete(w.pending, r)
		}
	}
	slices.SortFunc(due, func(a, b *watchReg) int { return a.due.Compare(b.due) })
	w.mu.Unlock()
	for _, r := range due {
		if !r.canceled.Load() {
			r.onChange()
		}
	}
}

// arm makes r's directory watches match what its path resolves to now. It re-resolves after
// adding watches until nothing moved in between, so that a directory or symlink that changed
// before its watch was in place is not missed.
func (w *Watcher) arm(r *watchReg) error {
	var err error
	for range watchMaxArmRounds {
		want := resolveWatched(r.path)
		if slices.Equal(want, r.entries) {
			return nil
		}
		err = w.rearmTo(r, want)
	}
	return err // nil if the directories merely kept changing: their events re-arm later
}

// rearmTo moves r to the entries want, adding watches before dropping old ones so that a
// directory both need is not dropped and re-added.
func (w *Watcher) rearmTo(r *watchReg, want []watchedEntry) error {
	var hard error
	next := make([]watchedEntry, 0, len(want))
	for _, p := range want {
		if slices.Contains(r.entries, p) {
			next = append(next, p)
			continue
		}
		if err := w.acquire(r, p); err != nil {
			// A directory that vanished since resolve is found again by the next round.
			if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
				hard = err
			}
			continue
		}
		next = append(next, p)
	}
	for _, p := range r.entries {
		if !slices.Contains(want, p) {
			w.release(r, p)
		}
	}
	r.entries = next
	return hard
}

func (w *Watcher) acquire(r *watchReg, p watchedEntry) error {
	dw := w.dirs[p.dir]
	if dw == nil {
		if err := w.addDir(p.dir); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return fmt.Errorf("watching directory %s (raise fs.inotify.max_user_watches): %w", p.dir, err)
			}
			return fmt.Errorf("watching directory %s: %w", p.dir, err)
		}
		fi, err := os.Stat(p.dir)
		if err != nil {
			_ = w.fsw.Remove(p.dir)
			return fmt.Errorf("watching directory %s: %w", p.dir, err)
		}
		dw = &dirWatch{fi: fi, names: map[string]map[*watchReg]struct{}{}}
		w.dirs[p.dir] = dw
		w.log.Debug().Str("dir", p.dir).Msg("watching directory")
	}
	dw.refs++
	regs := dw.names[p.name]
	if regs == nil {
		regs = map[*watchReg]struct{}{}
		dw.names[p.name] = regs
	}
	regs[r] = struct{}{}
	return nil
}

func (w *Watcher) release(r *watchReg, p watchedEntry) {
	dw := w.dirs[p.dir]
	if dw == nil {
		return
	}
	if regs := dw.names[p.name]; regs != nil {
		delete(regs, r)
		if len(regs) == 0 {
			delete(dw.names, p.name)
		}
	}
	if dw.refs--; dw.refs > 0 {
		return
	}
	delete(w.dirs, p.dir)
	if err := w.fsw.Remove(p.dir); err != nil && !errors.Is(err, fsnotify.ErrNonExistentWatch) {
		w.log.Debug().Err(err).Str("dir", p.dir).Msg("removing a directory watch")
	}
	w.log.Debug().Str("dir", p.dir).Msg("stopped watching directory")
}

func (w *Watcher) releaseAll(r *watchReg) {
	for _, p := range r.entries {
		w.release(r, p)
	}
	r.entries = nil
}

// resolveWatched walks the absolute, clean path as the kernel would, following symlinks, and returns
// the directory entries whose change can change what path refers to: every symlink on the way,
// the first component that does not exist (or is not a directory), and the final name. The
// directories in the result contain no symlinks, so they match fsnotify's event names.
func resolveWatched(path string) []watchedEntry {
	var entries []watchedEntry
	add := func(dir, name string) {
		if p := (watchedEntry{dir, name}); !slices.Contains(entries, p) {
			entries = append(entries, p)
		}
	}
	dest, rest := string(filepath.Separator), path
	hops := 0
	for {
		var c string // the next component
		c, rest, _ = strings.Cut(strings.TrimLeft(rest, string(filepath.Separator)), string(filepath.Separator))
		switch c {
		case "":
			// The path ends on a directory (through a symlink or ".."): report its own entry.
			if filepath.Dir(dest) != dest {
				add(filepath.Dir(dest), filepath.Base(dest))
			}
			return entries
		case ".":
			continue
		case "..":
			dest = filepath.Dir(dest)
			continue
		}
		cand := filepath.Join(dest, c)
		fi, err := os.Lstat(cand)
		switch {
		case err != nil:
			// Missing (or unreadable): watch for it to appear in the nearest existing ancestor.
			add(dest, c)
			return entries
		case fi.Mode()&fs.ModeSymlink != 0:
			add(dest, c)
			if hops++; hops > watchMaxSymlinkHops {
				return entries
			}
			target, err := os.Readlink(cand)
			if err != nil {
				return entries
			}
			if filepath.IsAbs(target) {
				dest = string(filepath.Separator)
			}
			if rest != "" {
				target += string(filepath.Separator) + rest
			}
			rest = target
		case fi.IsDir():
			dest = cand
		default:
			// A file: the end of the path, or a file where a directory should be.
			add(dest, c)
			return entries
		}
	}
}

// Exhausted reports whether a watch was refused for want of inotify watches (ENOSPC) or
// instances (EMFILE).
func Exhausted(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE)
}
