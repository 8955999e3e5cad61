package main

import (
	"strings"
	"testing"
)

// The watchers benchmark writes three parts under one title: the report must show one heading.
func TestSectionsOfOneTitleShareAHeading(t *testing.T) {
	b := &bench{}
	b.section("Watchers").printf("**Memory.** first\n\n")
	b.section("Proxy").printf("proxy\n")
	b.section("Watchers").printf("**Fan-out.** second\n\n")
	if len(b.sections) != 2 {
		t.Fatalf("%d sections, want 2 (Watchers, Proxy)", len(b.sections))
	}
	if got := b.sections[0]; got.Title != "Watchers" || !strings.Contains(got.Body.String(), "first\n\n**Fan-out.** second") {
		t.Errorf("first section %q: %q, want both watcher parts in order", got.Title, got.Body.String())
	}
	if b.sections[1].Title != "Proxy" {
		t.Errorf("second section %q, want Proxy", b.sections[1].Title)
	}
}
