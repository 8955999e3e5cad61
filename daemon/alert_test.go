package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// A service account refused for good runs notify_command once, with what happened in its
// environment and no secret; status says what to do.
func TestRefusedCredentialRunsTheNotifyCommandOnce(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	bad := api.AddClient("sa-2", "x")
	api.AddClient("sa-2", "rotated") // the secret we hold is now wrong
	out := filepath.Join(t.TempDir(), "notified")
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + bad, "GITHUB_TOKEN=ghp-secret", "LANG=C.UTF-8"},
		Mutate: func(c *daemon.Config) {
			c.NotifyCommand = `{ env | sort; echo ---; } >> ` + out
		}})
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionGet); ipc.ErrorCode(err) != ipc.CodeAuthFailed {
		t.Fatalf("err = %v, want auth_failed", err)
	}
	var got string
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(got, "---") {
		if time.Now().After(deadline) {
			t.Fatalf("notify_command did not run; its file holds %q", got)
		}
		time.Sleep(20 * time.Millisecond)
		b, _ := os.ReadFile(out)
		got = string(b)
	}
	for _, want := range []string{"BLAUTH_WORKSPACE=acme", "BLAUTH_REASON=refused", "BLAUTH_EXPIRES=\n", "BLAUTH_MESSAGE=workspace acme: "} {
		if !strings.Contains(got, want) {
			t.Errorf("notify_command's environment lacks %q:\n%s", want, got)
		}
	}
	for _, secret := range []string{bad, "BL_CLIENT_CREDENTIALS=", "ghp-secret"} {
		if strings.Contains(got, secret) {
			t.Errorf("notify_command's environment holds %q", secret)
		}
	}
	if !strings.Contains(got, "LANG=C.UTF-8") {
		t.Errorf("notify_command's environment lost the daemon's LANG:\n%s", got)
	}
	for i := 0; i < 5; i++ {
		_, _ = td.Do(t, ipc.KeyAction, ipc.ActionGet)
	}
	st, err := td.Do(t, ipc.KeyAction, ipc.ActionStatus)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Long(ipc.KeyJSON); !strings.Contains(s, `"alert":"workspace acme: the service account's client credentials were refused for good`) {
		t.Errorf("status does not carry the alert: %s", s)
	}
	b, _ := os.ReadFile(out)
	if n := strings.Count(string(b), "---"); n != 1 {
		t.Errorf("notify_command ran %d times for one refusal", n)
	}
}
