package token

import (
	"errors"
	"fmt"
	"net/url"
)

// ErrBadURL reports a URL the daemon was configured with (BL_API_URL, a token endpoint, an
// issuer) that it cannot use: it does not parse, or is not an absolute http or https URL with a
// host. It is a configuration error, not a refusal of the credential: retrying cannot help, and
// the URL itself is never quoted, since it may hold a password.
var ErrBadURL = errors.New("not a usable URL")

// CheckURL returns nil for an absolute http or https URL naming a host, and otherwise an error
// wrapping ErrBadURL that says what is wrong without quoting any of it.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %s", ErrBadURL, parseProblem(err))
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: it is not an http or https URL", ErrBadURL)
	case u.Host == "":
		return fmt.Errorf("%w: it names no host", ErrBadURL)
	}
	return nil
}

// parseProblem names what url.Parse found wrong, without the URL or the part at fault (its
// errors quote both).
func parseProblem(err error) string {
	var esc url.EscapeError
	var host url.InvalidHostError
	switch {
	case errors.As(err, &esc):
		return "it holds an invalid %-escape"
	case errors.As(err, &host):
		return "its host holds a character a host name cannot"
	}
	return "it does not parse as a URL"
}

// RedactURL is raw fit to be quoted in an answer or a log: without user info (a name and
// password before the host), and a placeholder when it does not parse.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse)"
	}
	if u.User == nil {
		return raw
	}
	u.User = nil
	return u.String()
}
