//go:build reliability

package reliability

import (
	"bufio"
	"os"
	"sort"
	"strings"
	"testing"
)

// secretIndex finds any of a set of secrets in a line in one pass: the secrets are indexed by
// their first 8 bytes (the registry keeps none shorter).
type secretIndex map[string][]string

const secretPrefix = 8

func newSecretIndex(secrets map[string]string) secretIndex {
	ix := secretIndex{}
	for s := range secrets {
		ix[s[:secretPrefix]] = append(ix[s[:secretPrefix]], s)
	}
	for _, ss := range ix {
		sort.Strings(ss)
	}
	return ix
}

// find returns the secrets line holds.
func (ix secretIndex) find(line string) []string {
	var found []string
	for i := 0; i+secretPrefix <= len(line); i++ {
		for _, s := range ix[line[i:i+secretPrefix]] {
			if strings.HasPrefix(line[i:], s) {
				found = append(found, s)
			}
		}
	}
	return found
}

// TestReliabilityZZSecretsNeverLogged searches every log line the run wrote (every daemon's
// stderr, every helper's stderr) for every secret the run used or the fake API issued: API keys,
// client secrets, BL_CLIENT_CREDENTIALS values, access tokens (whole, payload and signature),
// refresh tokens and device codes. It runs last (its file sorts last) and sees the whole run.
func TestReliabilityZZSecretsNeverLogged(t *testing.T) {
	secrets, logs := run.snapshot()
	if len(logs) == 0 {
		t.Skip("no other case ran: run the whole suite (make reliability) for this one to mean something")
	}
	ix := newSecretIndex(secrets)
	kinds := map[string]int{}
	for s, what := range secrets {
		kinds[what]++
		// The search itself is checked: each secret, buried in a log-like line, is found.
		if found := ix.find(`{"level":"info","x":"` + s + `"}`); len(found) == 0 {
			t.Fatalf("the search misses a %s", what)
		}
	}
	lines, size, hits := 0, 0, 0
	for _, p := range logs {
		f, err := os.Open(p)
		if err != nil {
			t.Errorf("log %s: %v", p, err)
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
		n := 0
		for sc.Scan() {
			n++
			lines++
			size += len(sc.Bytes()) + 1
			for _, s := range ix.find(sc.Text()) {
				hits++
				if hits <= 20 {
					// Never print the secret itself: say which kind, where.
					t.Errorf("%s:%d holds a %s", p, n, secrets[s])
				}
			}
		}
		if err := sc.Err(); err != nil {
			t.Errorf("log %s: %v", p, err)
		}
		f.Close()
	}
	t.Logf("FIGURE secrets: %d log files, %d lines (%d bytes) searched for %d secret strings %v: %d hits",
		len(logs), lines, size, len(secrets), kinds, hits)
	if lines == 0 {
		t.Error("the logs are empty: nothing was searched")
	}
}
