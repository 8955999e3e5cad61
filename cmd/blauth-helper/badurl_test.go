package main

import (
	"strings"
	"testing"
)

// A BL_API_URL that does not parse is a setting to fix: exit 2 with the variable named, and the
// URL, which here holds a password, never printed.
func TestUnparsableAPIURLExitsWithAUsageError(t *testing.T) {
	const password = "s3cret-pw"
	startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=bl_key-123", "BL_API_URL=https://me:" + password + "@api.example.test/%zz"}})
	r := runHelper(t, "", "token")
	mustFail(t, r, exitUsage)
	if !strings.Contains(r.stderr, "BL_API_URL") || strings.Contains(r.stderr, password) || strings.Contains(r.stderr, "%zz") {
		t.Fatalf("stderr %q: want BL_API_URL named and the URL not quoted", r.stderr)
	}
}
