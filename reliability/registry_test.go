//go:build reliability

package reliability

import (
	"sort"
	"strings"
	"sync"
)

// The run's registry: every secret a case used or the fake API issued, and every log file a
// daemon (or a helper's stderr) wrote. TestReliabilityZZSecretsNeverLogged searches the second for
// the first.
var run = &registry{secrets: map[string]string{}}

type registry struct {
	mu      sync.Mutex
	secrets map[string]string // secret → what it is
	logs    []string
}

// secret records s (and its telling parts) as a secret of the run.
func (r *registry) secret(what, s string) {
	if len(s) < 8 {
		return // too short to search for without false hits; no case uses one
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.secrets[s]; ok {
		return // first label wins: "access token" rather than "served token"
	}
	r.secrets[s] = what
	// A JWT logged in part is still a leak: its payload and its signature are searched too.
	if parts := strings.Split(s, "."); len(parts) == 3 && strings.HasPrefix(s, "eyJ") {
		r.secrets[parts[1]] = what + " (payload)"
		r.secrets[parts[2]] = what + " (signature)"
	}
	// The fake's refresh tokens and device codes are a prefix and random hex.
	for _, p := range []string{"rt-", "dc-"} {
		if rest, ok := strings.CutPrefix(s, p); ok && len(rest) >= 16 {
			r.secrets[rest] = what + " (random part)"
		}
	}
}

func (r *registry) log(path string) {
	r.mu.Lock()
	r.logs = append(r.logs, path)
	r.mu.Unlock()
}

func (r *registry) snapshot() (map[string]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := make(map[string]string, len(r.secrets))
	for k, v := range r.secrets {
		s[k] = v
	}
	logs := append([]string(nil), r.logs...)
	sort.Strings(logs)
	return s, logs
}
