package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// noSuchPath is the answer to a path under neither prefix.
const noSuchPath = "no such path: it forwards " + APIPrefix + "/… to the Blaxel API ($BL_API_URL), " + RunPrefix + "/… to run hosts ($BL_RUN_URL) and " + HostPrefix + "/HOST/… to a sandbox or preview host"

// splitTarget decides the route of r from its target as received: the prefix, and the rest of
// the path after it, decoded once and as sent (with its escapes made canonical). The prefix and
// the separator after it must be sent literally: a target whose route would depend on how its
// escapes are read is refused, with the status to answer. So are a target that is not a path
// (absolute form, authority form, "*"), a backslash or a literal '#', a segment that is "." or
// ".." once decoded, a control character once decoded, and an empty segment right after the
// prefix. Escapes after the separator are data (an SDK sends a file path as one segment,
// "tmp%2Fa.txt"): they stay escaped in the path sent, under the base, to the base's host.
func splitTarget(r *http.Request) (prefix, rest, rawRest string, status int, problem string) {
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	if !strings.HasPrefix(target, "/") {
		return "", "", "", http.StatusBadRequest, "the request target is not a path: blauth-proxy is not a forward proxy; send " + APIPrefix + "/… or " + RunPrefix + "/…"
	}
	raw, _, _ := strings.Cut(target, "?")
	path := r.URL.Path
	for _, p := range [...]string{APIPrefix, RunPrefix, HostPrefix} { // a target is under one at most
		switch {
		case underPrefix(raw, p):
			prefix = p
		case underPrefix(path, p), strings.HasPrefix(raw, p+"%"):
			return "", "", "", http.StatusBadRequest, "the path's prefix or the separator after it is percent-encoded: send " + APIPrefix + "/…, " + RunPrefix + "/… or " + HostPrefix + "/HOST/… as such"
		}
	}
	if prefix == "" {
		return "", "", "", http.StatusNotFound, noSuchPath
	}
	if !underPrefix(path, prefix) { // decoding keeps a literal prefix: cannot happen
		return "", "", "", http.StatusBadRequest, "the path does not decode under its prefix"
	}
	rawRest, rest = raw[len(prefix):], path[len(prefix):]
	switch {
	case strings.HasPrefix(rawRest, "//"), strings.HasPrefix(rest, "//"):
		return "", "", "", http.StatusBadRequest, "a path with an empty segment after " + prefix + " is not forwarded"
	case strings.ContainsAny(raw, `\#`), strings.Contains(raw, "%5c"), strings.Contains(raw, "%5C"):
		return "", "", "", http.StatusBadRequest, "a path with a backslash or a # is not forwarded"
	case hasDotSegment(path):
		return "", "", "", http.StatusBadRequest, "a path with . or .. segments is not forwarded"
	case strings.ContainsFunc(path, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "", "", "", http.StatusBadRequest, "a path with an encoded control character is not forwarded"
	}
	return prefix, rest, canonicalEscapes(rawRest), 0, ""
}

// underPrefix reports whether p is prefix or starts with prefix and a slash.
func underPrefix(p, prefix string) bool {
	return strings.HasPrefix(p, prefix) && (len(p) == len(prefix) || p[len(prefix)] == '/')
}

func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// canonicalEscapes percent-encodes the bytes of an escaped path that net/url does not accept
// literally in an escaped path (a client may send '{' or UTF-8 as such), so that the path
// sent upstream keeps the client's escapes: it decodes to the same path.
func canonicalEscapes(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !pathByte(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		if c := s[i]; pathByte(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// pathByte reports whether c may stand as such in an escaped path (url.URL.RawPath).
func pathByte(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@[]/%", c) >= 0
}

// upstream is a base that requests are forwarded under, parsed once: its scheme and host are
// the only ones a request routed to it is sent to.
type upstream struct {
	raw          string // as configured, without a trailing slash
	scheme, host string
	path         string // decoded, without a trailing slash
	rawPath      string // escaped, without a trailing slash
}

// parseBase checks and parses an upstream base: an absolute http or https URL with a host and
// no user info.
func parseBase(raw string) (*upstream, error) {
	raw = strings.TrimRight(raw, "/")
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Opaque != "" {
		return nil, fmt.Errorf("the upstream base %s is not an absolute http or https URL without user info", quoteURL(raw))
	}
	return &upstream{raw: raw, scheme: u.Scheme, host: u.Host,
		path: strings.TrimRight(u.Path, "/"), rawPath: strings.TrimRight(u.EscapedPath(), "/")}, nil
}

// join is the upstream URL for a path under the base (rest decoded, rawRest escaped, both
// starting with "/" or empty) and a query, from the base's fields: nothing of the request
// can reach the scheme, the user info or the host.
func (b *upstream) join(rest, rawRest, query string) url.URL {
	return url.URL{Scheme: b.scheme, Host: b.host, Path: b.path + rest, RawPath: b.rawPath + rawRest, RawQuery: query}
}

// holds reports whether u is sent to b's scheme and host, without user info, under b's path.
func (b *upstream) holds(u *url.URL) bool {
	if u.Scheme != b.scheme || u.Host != b.host || u.User != nil || u.Opaque != "" {
		return false
	}
	if b.path == "" {
		return u.Path == "" || u.Path[0] == '/'
	}
	return underPrefix(u.Path, b.path)
}

// String is the base as it may be logged.
func (b *upstream) String() string { return b.scheme + "://" + b.host + b.rawPath }

// apiBases are the upstreams of one API base: the API itself, the run base derived from it
// (or why there is none), and the run domains of the /host route.
type apiBases struct {
	api     *upstream
	run     *upstream
	runErr  error
	domains []string
}

// route is the forward of a request under prefix (rest decoded, rawRest escaped, after the
// prefix) for cred, or why there is none and the status to answer. Under HostPrefix the host
// comes from the path and is checked against the run domains of cred's API base.
func (s *Server) route(prefix, rest, rawRest, query string, cred Credential) (*forward, int, error) {
	base, bases, err := s.upstreamFor(prefix, cred.APIURL)
	if err != nil {
		return nil, http.StatusBadGateway, err
	}
	fw := &forward{base: base, prefix: prefix, cred: cred}
	switch prefix {
	case HostPrefix:
		// The run domains: the API base's (implied, and BLAUTH_RUN_DOMAINS), then those of
		// blauth's config file that came with the token (no copy when it names none).
		domains := bases.domains
		if len(cred.RunDomains) > 0 {
			domains = slices.Concat(domains, cred.RunDomains)
		}
		// hostRoute checks the base it builds (checkRunHostURL reads only its scheme, host and
		// user info); join takes those from the base's fields, and send checks that the URL
		// built stays on them.
		status := 0
		if fw.base, rest, rawRest, status, err = hostRoute(rest, rawRest, domains); err != nil {
			return nil, status, err
		}
		fw.prefix = HostPrefix + "/" + fw.base.host
	case APIPrefix:
		fw.answers = runURLFields(rest)
	}
	fw.target = fw.base.join(rest, rawRest, query)
	return fw, 0, nil
}

// upstreamFor is the base a request under prefix goes to, for a token issued for apiURL, and
// the bases of that API base. The bases of the last API base seen are kept, so that a request
// parses nothing. Under HostPrefix the base is the API's: route replaces it with the host's.
func (s *Server) upstreamFor(prefix, apiURL string) (*upstream, *apiBases, error) {
	if prefix == RunPrefix && s.runBase != nil {
		return s.runBase, nil, nil
	}
	b := s.apiBases.Load()
	if b == nil || b.api.raw != strings.TrimRight(apiURL, "/") {
		if apiURL == "" {
			return nil, nil, errors.New("blauthd named no API base (api_url) for the token: it is older than this proxy; restart it")
		}
		api, err := parseBase(apiURL)
		if err != nil {
			return nil, nil, err
		}
		b = &apiBases{api: api, domains: RunDomains(apiURL, s.runDomains)}
		if s.runBase == nil {
			var run string
			if run, b.runErr = RunBase(apiURL, ""); b.runErr == nil {
				b.run, b.runErr = parseBase(run)
			}
		}
		s.apiBases.Store(b)
	}
	if prefix == RunPrefix {
		return b.run, b, b.runErr
	}
	return b.api, b, nil
}
