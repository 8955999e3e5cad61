package blconfig

import (
	"os"
	"strings"
	"testing"
)

func TestUnsafeReason(t *testing.T) {
	const me = 1000
	tests := []struct {
		isDir       bool
		mode        os.FileMode
		owner       int
		wantPhrases []string // empty: safe
	}{
		{false, 0o600, me, nil},
		{false, 0o644, me, nil},
		{false, 0o600, 0, nil},
		{true, 0o700, me, nil},
		{true, 0o755, 0, nil},
		{true, 0o777 | os.ModeSticky, 0, nil},
		{false, 0o600, 1001, []string{"is owned by uid 1001, not by you (uid 1000)", "fix: chown 1000 P"}},
		{true, 0o700, 1001, []string{"the directory P (it holds the bl config) is owned by uid 1001"}},
		{false, 0o602, me, []string{"the bl config P is writable by other users (mode 0602)", "fix: chmod 600 P"}},
		{true, 0o775, me, []string{"is writable by other users (mode 0775)", "fix: chmod 700 P"}},
		{false, 0o666 | os.ModeSticky, me, []string{"writable by other users"}}, // the sticky bit excuses only a directory
	}
	for _, tt := range tests {
		got := unsafeReason("P", tt.isDir, tt.mode, tt.owner, me)
		if len(tt.wantPhrases) == 0 {
			if got != "" {
				t.Errorf("dir=%v mode=%v owner=%d: %q, want safe", tt.isDir, tt.mode, tt.owner, got)
			}
			continue
		}
		for _, p := range tt.wantPhrases {
			if !strings.Contains(got, p) {
				t.Errorf("dir=%v mode=%v owner=%d: %q does not say %q", tt.isDir, tt.mode, tt.owner, got, p)
			}
		}
	}
}
