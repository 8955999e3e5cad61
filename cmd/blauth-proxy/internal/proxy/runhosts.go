package proxy

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/blauth/blauth/ipc"
)

// HostPrefix is the route to a host of Blaxel's run domains: {proxy}/host/HOST/… is forwarded
// to https://HOST/… (http:// when HOST is a loopback address, which only a test names). A
// sandbox's own host (its metadata.url) and a preview's host are reached this way: the proxy
// writes their URLs in the API's answers as such routes (runanswers.go).
const HostPrefix = "/host"

// RunDomainsEnv names the run domains, besides those of the API base, that the proxy forwards
// to: comma-separated, read from the environment blauth-proxy is started with.
const RunDomainsEnv = "BLAUTH_RUN_DOMAINS"

// impliedRunDomains are the run domains of Blaxel's API bases, as @blaxel/core 0.3.21 names
// its edge (sandbox/sandbox.js, edgeDomainForRegion): sandboxes and previews are served under
// bl.run in prod and under runv2.blaxel.dev in dev.
var impliedRunDomains = map[string][]string{
	"https://api.blaxel.ai/v0":  {"bl.run"},
	"https://api.blaxel.dev/v0": {"runv2.blaxel.dev"},
}

// RunDomains are the domains whose hosts the /host route forwards to for a token of apiURL:
// those the API base implies, then extra (BLAUTH_RUN_DOMAINS, run_domains: of the config).
func RunDomains(apiURL string, extra []string) []string {
	return slices.Concat(impliedRunDomains[strings.TrimRight(apiURL, "/")], extra)
}

// underRunDomain reports whether host (lower case, without port) is one of domains or a name
// under one of them, on a label boundary. An IP address matches only itself.
func underRunDomain(host string, domains []string) bool {
	isIP := net.ParseIP(host) != nil
	for _, d := range domains {
		if host == d || (!isIP && net.ParseIP(d) == nil && strings.HasSuffix(host, "."+d)) {
			return true
		}
	}
	return false
}

// checkRunHostURL is the check of a URL built for the /host route, after it is built: https,
// or http only to a loopback host; no user info, query-free authority; a host name under one
// of domains; no port but 443 (any port on loopback).
func checkRunHostURL(u *url.URL, domains []string) error {
	host, port := u.Hostname(), u.Port()
	loop := isLoopback(host)
	switch {
	case u.User != nil || u.Opaque != "":
		return fmt.Errorf("%s holds user info", withoutSecrets(u))
	case u.Scheme != "https" && !(u.Scheme == "http" && loop):
		return fmt.Errorf("%s is neither https nor http to a loopback host", withoutSecrets(u))
	case host != strings.ToLower(host) || !ipc.ValidHostname(host):
		return fmt.Errorf("%q is not a host name", ipc.Clip(host, 80))
	case !underRunDomain(host, domains):
		return fmt.Errorf("%s is not under Blaxel's run domains (%s): name its domain in %s or run_domains: of blauth's config to reach it", host, domainList(domains), RunDomainsEnv)
	case strings.HasSuffix(u.Host, ":") || port != "" && !validPort(port, loop):
		return fmt.Errorf("%s: a run host is reached on port 443 only (any port on loopback)", host)
	}
	return nil
}

func validPort(p string, loop bool) bool {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
		return false
	}
	return loop || n == 443
}

func domainList(domains []string) string {
	if len(domains) == 0 {
		return "none for this API base"
	}
	return strings.Join(domains, ", ")
}

// hostRoute splits a path under HostPrefix (rest decoded, rawRest escaped, both after the
// prefix) into the upstream of its first segment, a host[:port] sent literally, and the rest
// after it. The upstream is checked with checkRunHostURL once built.
func hostRoute(rest, rawRest string, domains []string) (base *upstream, subRest, subRaw string, status int, err error) {
	seg, _, _ := strings.Cut(strings.TrimPrefix(rawRest, "/"), "/")
	switch {
	case !strings.HasPrefix(rawRest, "/") || seg == "":
		return nil, "", "", http.StatusNotFound, fmt.Errorf("no host: send %s/HOST/… with HOST under Blaxel's run domains", HostPrefix)
	case strings.ContainsAny(seg, "%@[]"):
		return nil, "", "", http.StatusBadRequest, fmt.Errorf("the host segment after %s/ is escaped or holds user info or brackets: send the host name as such", HostPrefix)
	}
	host, port, hasPort := strings.Cut(strings.ToLower(seg), ":")
	scheme := "https"
	if isLoopback(host) {
		scheme = "http"
	} else if port == "443" {
		port, hasPort = "", false // the default port of https, said once
	}
	hostport := host
	if hasPort {
		hostport += ":" + port // checked below; a second ':' fails the check of the port
	}
	u := &url.URL{Scheme: scheme, Host: hostport}
	if err := checkRunHostURL(u, domains); err != nil {
		return nil, "", "", http.StatusForbidden, err
	}
	n := 1 + len(seg) // the decoded rest starts with the same literal segment
	if len(rest) < n || !strings.EqualFold(rest[1:n], seg) {
		return nil, "", "", http.StatusBadRequest, fmt.Errorf("the host segment does not decode as sent")
	}
	return &upstream{raw: scheme + "://" + hostport, scheme: scheme, host: hostport}, rest[n:], rawRest[n:], 0, nil
}
