//go:build reliability

package reliability

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources/blconfig"
)

// TestReliabilityRotationWithoutWriteBack: with --no-write-back (issue 4: "an option turns
// write-back off") the daemon cannot save a rotated refresh token, so it must keep it in memory
// and go on refreshing with it. The fake API rotates refresh tokens and rejects reuse; tokens live
// 10s, so the daemon refreshes every 6s or so; callers ask every 100ms for 30s, through several
// refreshes, and every get must succeed.
func TestReliabilityRotationWithoutWriteBack(t *testing.T) {
	const (
		ws  = "nowb-ws"
		ttl = 10 * time.Second
		dur = 30 * time.Second
	)
	api := newFakeAPI(t, ttl)
	device := "dc-" + randHex(12)
	access, rt := api.newSession("nowb-user", device)
	base := shortDir(t)
	home := filepath.Join(base, "home")
	cfgPath := blconfig.DefaultPath(home)
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o700); err != nil {
		t.Fatal(err)
	}
	c := &blconfig.Config{Context: blconfig.Context{Workspace: ws}, Workspaces: []blconfig.Workspace{
		{Name: ws, Credentials: blconfig.Credentials{AccessToken: access, RefreshToken: rt, ExpiresIn: int(ttl.Seconds()), DeviceCode: device}}}}
	original := c.Marshal()
	if err := os.WriteFile(cfgPath, original, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, daemonOpts{api: api, home: home, args: []string{"--no-write-back", "--min-ttl", "1s"}})
	start := time.Now()
	gets := 0
	for time.Since(start) < dur {
		tok, err := d.get(ipc.KeyWorkspace, ws)
		if err != nil {
			t.Fatalf("after %s and %d refresh grants, get: %v (code %s)", time.Since(start).Round(100*time.Millisecond), api.Count("refresh_token"), err, ipc.ErrorCode(err))
		}
		if err := api.checkToken(tok.Token, tok.Expiry, time.Now(), time.Second-time.Millisecond); err != nil {
			t.Fatal(err)
		}
		gets++
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("FIGURE no write-back: %d gets over %s, %d refresh grants, all served", gets, dur, api.Count("refresh_token"))
	if data, _ := os.ReadFile(cfgPath); string(data) != string(original) {
		t.Errorf("--no-write-back wrote the bl config")
	}
	d.stop()
}
