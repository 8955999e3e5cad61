package main

import (
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// status says how long the workspace's tokens live, and when this machine's clock is off the
// token endpoint's, by how much and which way.
func TestStatusShowsLifetimeAndClockSkew(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	st := &ipc.Status{Version: "test", Workspaces: []ipc.WorkspaceStatus{
		{Workspace: "behind", Kind: ipc.KindClientCredentials, Source: "daemon_env:BL_CLIENT_CREDENTIALS", Expiry: now.Add(time.Hour), Lifetime: 7200, ClockSkew: -7199},
		{Workspace: "ahead", Kind: ipc.KindLogin, Source: "bl_config", Expiry: now.Add(time.Minute), Lifetime: 60, ClockSkew: 3000},
		{Workspace: "agreeing", Kind: ipc.KindClientCredentials, Source: "env", Expiry: now.Add(time.Hour), Lifetime: 7200},
	}}
	var b strings.Builder
	printStatus(&b, st, now)
	out := b.String()
	for _, want := range []string{
		"LIFETIME",
		"behind: this machine's clock is 2h00m behind the token endpoint's",
		"ahead: this machine's clock is 50m00s ahead of the token endpoint's",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "behind ") && !strings.Contains(line, "2h00m") || strings.HasPrefix(line, "ahead ") && !strings.Contains(line, "1m00s") {
			t.Errorf("the table line does not show the lifetime: %q", line)
		}
		if strings.HasPrefix(line, "agreeing:") {
			t.Errorf("a clock skew is reported for agreeing clocks: %q", line)
		}
	}
}

// status names a session whose refresh token rotates, and only that one.
func TestStatusNamesARotatingSession(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	yes, no := true, false
	st := &ipc.Status{Version: "test", Workspaces: []ipc.WorkspaceStatus{
		{Workspace: "rotating", Kind: ipc.KindLogin, Source: "bl_config", Expiry: now.Add(time.Hour), RefreshTokenRotates: &yes},
		{Workspace: "steady", Kind: ipc.KindLogin, Source: "bl_config", Expiry: now.Add(time.Hour), RefreshTokenRotates: &no},
	}}
	var b strings.Builder
	printStatus(&b, st, now)
	out := b.String()
	if !strings.Contains(out, "rotating: the session's refresh token rotates") {
		t.Errorf("status does not name the rotating session:\n%s", out)
	}
	if strings.Contains(out, "steady: the session's refresh token rotates") {
		t.Errorf("status names a session that does not rotate:\n%s", out)
	}
}
