package docs_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/blauth/blauth/sources"
)

// CONFIG.md's table of keys lists every key blauth's config file takes, and no other: a key the
// daemon reads but the docs do not name is a setting nobody can find.
func TestConfigDocListsEveryKey(t *testing.T) {
	doc, err := os.ReadFile("CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Keys\n")
	if !ok {
		t.Fatal("CONFIG.md has no ## Keys section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(section, -1) {
		documented = append(documented, m[1])
	}
	var keys []string
	for _, k := range sources.BlauthConfigKeys() {
		keys = append(keys, k[0])
	}
	slices.Sort(documented)
	slices.Sort(keys)
	if len(keys) == 0 || !slices.Equal(documented, keys) {
		t.Errorf("CONFIG.md documents the keys %v; blauthd reads %v", documented, keys)
	}
}
