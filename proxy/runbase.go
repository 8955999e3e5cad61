package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Blaxel's API bases and the run bases that go with them, as the TypeScript SDK (@blaxel/core
// 0.3.21, common/settings.js) pairs them: the environment "prod" (BL_ENV unset or "prod") uses
// api.blaxel.ai and run.blaxel.ai, any other uses api.blaxel.dev and run.blaxel.dev.
var runBases = map[string]string{
	"https://api.blaxel.ai/v0":  "https://run.blaxel.ai",
	"https://api.blaxel.dev/v0": "https://run.blaxel.dev",
}

// RunBase returns the run base for a token issued for apiURL (blauthd's api_url): runURL when
// it is set (BL_RUN_URL in the environment blauth-proxy was started with; never a .env file),
// else the run base of the same Blaxel environment as apiURL. For any other API base (a local
// or test endpoint) it returns an error: the SDK would fall back to run.blaxel.ai, but a token
// from another endpoint has no business there, so BL_RUN_URL must say where runs are.
func RunBase(apiURL, runURL string) (string, error) {
	if runURL != "" {
		if err := checkURL(runURL, false); err != nil {
			return "", fmt.Errorf("BL_RUN_URL: %w", err)
		}
		return strings.TrimRight(runURL, "/"), nil
	}
	if base, ok := runBases[strings.TrimRight(apiURL, "/")]; ok {
		return base, nil
	}
	return "", fmt.Errorf("no run base is known for the API base %s: set BL_RUN_URL in the environment of blauth-helper", quoteURL(apiURL))
}

// checkURL accepts an absolute http(s) URL without user info or fragment (and, for a base that
// paths are appended to, without a query); plain http only to a loopback host, so that no
// token crosses a network in clear.
func checkURL(raw string, query bool) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("not a URL (not quoted here: it may hold a password)")
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		return errors.New("not an absolute http or https URL (not quoted here: it may hold a password)")
	case u.User != nil, u.Fragment != "", u.RawQuery != "" && !query:
		return fmt.Errorf("%q holds user info, a query or a fragment", withoutSecrets(u))
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return fmt.Errorf("%q is plain http to a host that is not loopback: a token would cross the network in clear", withoutSecrets(u))
	}
	return nil
}

// withoutSecrets is u without its user info, query and fragment, to name it in an error: a
// password or a key in a query must not reach the terminal or a log.
func withoutSecrets(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
}

// quoteURL is raw as it may be named in an error or a log: without user info, query and
// fragment, or not at all when it does not parse.
func quoteURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse, not quoted here: it may hold a password)"
	}
	return withoutSecrets(u)
}

// CheckMCPURL checks the URL of an MCP endpoint given to the bridge: absolute http(s), https
// unless the host is loopback, no user info or fragment.
func CheckMCPURL(raw string) error { return checkURL(raw, true) }

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
