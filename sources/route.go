package sources

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Route binds the directories a pattern matches to a workspace: the routes: key of blauth's
// config file. A Route is immutable once read.
type Route struct {
	Dir       string // the pattern as written, ~ and all
	Workspace string
	Line      int      // its line in the config file
	elems     []string // the pattern's elements, ~ expanded, from the root
}

// Where names the route in a provenance: its pattern, file and line.
func (r Route) Where(file string) string {
	return fmt.Sprintf("%s (%s line %d)", r.Dir, file, r.Line)
}

// Kinds of pattern element, most specific last.
const (
	elemAny   = iota // **: any number of directories, none included
	elemGlob         // one directory, by a pattern (*, acme-*)
	elemExact        // one directory, by its name
)

func elemKind(e string) int {
	switch {
	case e == "**":
		return elemAny
	case strings.ContainsAny(e, `*?[\`):
		return elemGlob
	}
	return elemExact
}

// compileRoute checks a dir: pattern and splits it into elements. home expands a leading ~.
func compileRoute(pattern, home string) ([]string, error) {
	p := pattern
	switch {
	case p == "~" || strings.HasPrefix(p, "~/"):
		if home == "" {
			return nil, errors.New("the pattern starts with ~ but the home directory is unknown")
		}
		p = home + p[1:]
	case strings.HasPrefix(p, "~"):
		return nil, fmt.Errorf("dir %q: only ~ (your home) is expanded, not ~user", pattern)
	case !strings.HasPrefix(p, "/"):
		return nil, fmt.Errorf("dir %q is relative: start it with / or ~/", pattern)
	}
	var elems []string
	for _, e := range strings.Split(p, "/") {
		switch {
		case e == "" || e == ".":
			continue
		case e == "..":
			return nil, fmt.Errorf("dir %q holds .., which a pattern cannot match", pattern)
		case strings.Contains(e, "**") && e != "**":
			return nil, fmt.Errorf("dir %q: ** must be a whole path element (a/**/b), not part of %q", pattern, e)
		}
		if _, err := path.Match(e, ""); err != nil {
			return nil, fmt.Errorf("dir %q: %q is not a valid pattern (* ? [a-z] within one element)", pattern, e)
		}
		elems = append(elems, e)
	}
	return elems, nil
}

// Match reports whether dir, an absolute, clean path, is one the route's pattern matches. The
// whole path must match: ~/work/acme matches that directory only, ~/work/acme/** it and every
// directory below it.
func (r Route) Match(dir string) bool {
	var parts []string
	for _, e := range strings.Split(filepath.ToSlash(filepath.Clean(dir)), "/") {
		if e != "" {
			parts = append(parts, e)
		}
	}
	return matchElems(r.elems, parts)
}

func matchElems(pat, parts []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for skip := 0; skip <= len(parts); skip++ {
				if matchElems(pat[1:], parts[skip:]) {
					return true
				}
			}
			return false
		}
		if len(parts) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], parts[0]); !ok {
			return false
		}
		pat, parts = pat[1:], parts[1:]
	}
	return len(parts) == 0
}

// moreSpecific reports whether a is more specific than b: compared element by element from the
// root, a name beats a pattern within one element, which beats **; the first difference
// decides, and a pattern that goes on beats the one it extends.
func moreSpecific(a, b Route) bool {
	for i := 0; i < len(a.elems) && i < len(b.elems); i++ {
		if ka, kb := elemKind(a.elems[i]), elemKind(b.elems[i]); ka != kb {
			return ka > kb
		}
	}
	return len(a.elems) > len(b.elems)
}

// MatchRoute returns the most specific of routes that matches dir (see moreSpecific; on a tie,
// the first in the file), and false when none does.
func MatchRoute(routes []Route, dir string) (Route, bool) {
	var best Route
	found := false
	for _, r := range routes {
		if r.Match(dir) && (!found || moreSpecific(r, best)) {
			best, found = r, true
		}
	}
	return best, found
}

// parseRoutes reads the routes: key, a list of {dir: PATTERN, workspace: NAME}.
func parseRoutes(v *yaml.Node, home string) ([]Route, int, error) {
	if YAMLNull(v) {
		return nil, 0, nil
	}
	if v.Kind != yaml.SequenceNode {
		return nil, v.Line, errors.New("routes must be a list of {dir: PATTERN, workspace: NAME}")
	}
	var out []Route
	for _, item := range v.Content {
		item = YAMLAlias(item)
		r, line, err := parseRoute(item, home)
		if err != nil {
			return nil, line, err
		}
		out = append(out, r)
	}
	return out, 0, nil
}

func parseRoute(item *yaml.Node, home string) (Route, int, error) {
	r := Route{Line: item.Line}
	if item.Kind != yaml.MappingNode {
		return r, item.Line, errors.New("a route is a mapping: - dir: ~/work/acme/**  workspace: acme")
	}
	for i := 0; i+1 < len(item.Content); i += 2 {
		k, v := item.Content[i], YAMLAlias(item.Content[i+1])
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" || v.Value == "" {
			return r, v.Line, fmt.Errorf("a route's %s must be a non-empty string", k.Value)
		}
		switch k.Value {
		case "dir":
			r.Dir = v.Value
		case "workspace":
			r.Workspace = v.Value
		default:
			return r, k.Line, fmt.Errorf("unknown key %q in a route; a route has the keys dir and workspace", k.Value)
		}
	}
	if r.Dir == "" || r.Workspace == "" {
		return r, item.Line, errors.New("a route needs both dir and workspace")
	}
	if strings.ContainsAny(r.Workspace+r.Dir, "\r\n\x00") {
		return r, item.Line, errors.New("a route's dir and workspace cannot hold a line break or a NUL")
	}
	elems, err := compileRoute(r.Dir, home)
	if err != nil {
		return r, item.Line, err
	}
	r.elems = elems
	return r, 0, nil
}
