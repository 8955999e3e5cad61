package ipc

import (
	"strings"
	"testing"
)

func TestNearest(t *testing.T) {
	names := []string{"acme-prod", "acme-prof", "acme-ci", "dev"}
	for in, want := range map[string]string{
		"acme-prd":  "acme-prod",
		"acme-pord": "acme-prod", // a swap is one edit
		"ACME-CI":   "acme-ci",
		"acme-pro":  "acme-prod acme-prof",
		"acme-prod": "acme-prof", // itself is no typo
		"dve":       "dev",
		"dvx":       "", // two edits in three letters: another name
		"ab":        "",
		"zeta":      "",
		"acme":      "",
	} {
		if got := strings.Join(Nearest(in, names), " "); got != want {
			t.Errorf("Nearest(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Nearest(strings.Repeat("a", 100), []string{strings.Repeat("a", 99)}); len(got) != 1 {
		t.Errorf("a long name one edit away: %v", got)
	}
	if got := Nearest(strings.Repeat("a", maxNearest+1), []string{strings.Repeat("a", maxNearest)}); got != nil {
		t.Errorf("a name over %d bytes: %v; want it not compared", maxNearest, got)
	}
}
