package resolver

import (
	"fmt"
	"sync"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/sources/watch"
)

// routeSource holds the routes of blauth's config file, read at start and again whenever the
// file changes. A read never runs under a request: requests see the last good routes, and a
// file that cannot be used keeps them (its error is a source error) until it is fixed. Safe for
// concurrent use.
type routeSource struct {
	path     string
	optional bool // a missing file is no routes, not an error
	onChange func()
	log      zerolog.Logger
	cancel   func()

	mu       sync.Mutex
	routes   []sources.Route
	err      error // why the last read was refused
	watchErr error
	loading  bool // a read runs (one at a time)
	again    bool // the file changed during it
	closed   bool
}

func newRouteSource(path string, optional bool, w *watch.Watcher, onChange func(), log zerolog.Logger) *routeSource {
	s := &routeSource{path: path, optional: optional, onChange: onChange, log: log}
	if w != nil {
		cancel, err := w.Watch(path, s.changed)
		if err != nil {
			s.watchErr = fmt.Errorf("%s is not watched (%v): its routes are read again on reload only", path, err)
			log.Warn().Err(err).Str("path", path).Msg("cannot watch blauth's config file; its routes are read again on reload only")
		}
		s.cancel = cancel
	}
	s.read()
	return s
}

// read reads the file once and keeps its routes, or keeps the last good ones and the error.
func (s *routeSource) read() {
	c, err := sources.ReadBlauthConfig(s.path, s.optional)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.err = err
		s.log.Warn().Err(err).Msg("blauth's config file cannot be used; the routes read before are kept")
		return
	}
	s.routes, s.err = c.Routes, nil
}

// changed reads the file again in the background (the watcher's goroutine must not wait on a
// file), at most one read at a time, then announces the change.
func (s *routeSource) changed() {
	s.mu.Lock()
	if s.loading || s.closed {
		s.again = s.loading
		s.mu.Unlock()
		return
	}
	s.loading = true
	s.mu.Unlock()
	go func() {
		for {
			s.read()
			s.mu.Lock()
			if !s.again {
				s.loading = false
				s.mu.Unlock()
				break
			}
			s.again = false
			s.mu.Unlock()
		}
		s.onChange()
	}()
}

func (s *routeSource) get() []sources.Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.routes
}

// errors are why the file's routes may be stale.
func (s *routeSource) errors() []sources.SourceError {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sources.SourceError
	prov := sources.Provenance{Kind: sources.SourceBlauthConfig, Where: s.path}
	if s.err != nil {
		out = append(out, sources.SourceError{Source: prov, Error: s.err.Error() + "; the routes read before are kept until it is fixed"})
	}
	if s.watchErr != nil {
		out = append(out, sources.SourceError{Source: prov, Error: s.watchErr.Error()})
	}
	return out
}

func (s *routeSource) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
}
