package ipc

import (
	"sort"
	"strings"
)

// maxNearest is the longest name Nearest looks for a typo of.
const maxNearest = 256

// Nearest returns the candidates that s is probably a typo of, sorted: the closest by edit
// distance (insertions, deletions, substitutions and swaps of two neighbours, ignoring case),
// when that is at most 2 and at most a third of s's length rounded up, so that a short name is
// not matched to an unrelated one. An exact match is not a typo and is left out, and a name
// over maxNearest bytes is compared with nothing (no one types that).
func Nearest(s string, candidates []string) []string {
	if len(s) > maxNearest {
		return nil
	}
	limit := min(2, max(1, (len(s)+2)/3))
	type near struct {
		name string
		d    int
	}
	var found []near
	seen := map[string]bool{}
	for _, c := range candidates {
		if c == s || seen[c] {
			continue
		}
		seen[c] = true
		if d := typoDistance(strings.ToLower(s), strings.ToLower(c)); d <= limit {
			found = append(found, near{c, d})
		}
	}
	best := limit
	for _, f := range found {
		best = min(best, f.d)
	}
	var out []string
	for _, f := range found {
		if f.d == best {
			out = append(out, f.name)
		}
	}
	sort.Strings(out)
	return out
}

// typoDistance is the optimal string alignment distance between a and b, by bytes: the edits
// (insert, delete, substitute, swap two neighbours) that turn a into b. It gives up past 3:
// names that far apart are not typos of each other, and the inputs may be long.
func typoDistance(a, b string) int {
	const far = 3
	if d := len(a) - len(b); d > far || -d > far {
		return far + 1
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			rowMin = min(rowMin, cur[j])
		}
		if rowMin > far {
			return far + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
