package ipc

import (
	"fmt"
	"strings"
)

// KeyRunDomains are the run domains of blauth's config file (run_domains:), comma-separated, in
// a token answer (version 2): the hosts under them are where blauth-proxy may send the token
// besides the API and run bases (docs/IDE.md, "Sandboxes and previews").
const KeyRunDomains = "run_domains"

// ParseRunDomains reads a comma-separated list of run domains (empty entries are skipped), in
// lower case: each a host name of two labels or more, an IPv4 address, or localhost.
func ParseRunDomains(list string) ([]string, error) {
	var out []string
	for d := range strings.SplitSeq(list, ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		if d == "" {
			continue
		}
		if err := CheckRunDomain(d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// CheckRunDomain checks one run domain, in lower case.
func CheckRunDomain(d string) error {
	switch {
	case !ValidHostname(d):
		return fmt.Errorf("the run domain %q is not a host name (letters, digits, '-' and '.'; no port, no scheme)", Clip(d, 80))
	case !strings.Contains(d, ".") && d != "localhost":
		return fmt.Errorf("the run domain %q is a single label: it would admit a whole top-level domain", d)
	}
	return nil
}

// ValidHostname reports whether h (lower case) is a DNS name: labels of 1 to 63 letters,
// digits and '-', not starting or ending with '-', 253 characters at most, no trailing dot.
func ValidHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
