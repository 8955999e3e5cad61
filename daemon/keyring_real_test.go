//go:build real

package daemon_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources/keyring"
)

// requireTestKeyring fails (never skips) unless a disposable Secret Service from
// .ci/with-keyring.sh is reachable.
func requireTestKeyring(t *testing.T) {
	t.Helper()
	if os.Getenv("BLAUTH_TEST_KEYRING_HOME") == "" || os.Getenv("BLAUTH_TEST_KEYRING_HOME") != os.Getenv("HOME") {
		t.Fatal("the keyring suite needs a disposable Secret Service: run it under .ci/with-keyring.sh")
	}
}

func TestKeyringLoginServedAtOnceAndLogout(t *testing.T) {
	requireTestKeyring(t)
	api := blaxeltest.New(0)
	defer api.Close()
	cc := api.AddClient("sa-ring", "ring-secret")
	ring := &keyring.Keyring{Timeout: 5 * time.Second}
	td := daemontest.Start(t, daemontest.Options{API: api, Mutate: func(c *daemon.Config) { c.Keyring = ring }})
	t.Cleanup(func() {
		_ = ring.Delete(context.Background(), "ring-ws")
		_ = ring.Delete(context.Background(), "ring-sa")
	})

	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionKeyringSet, ipc.KeyWorkspace, "ring-ws", ipc.KeyKind, ipc.KindAPIKey, ipc.KeySecret, "bl_ring_key"); err != nil {
		t.Fatalf("keyring_set: %v", err)
	}
	tok := td.Token(t, ipc.KeyWorkspace, "ring-ws")
	if tok.Token != "bl_ring_key" || tok.Source != "keyring:blauth/ring-ws" {
		t.Fatalf("after login: %+v", tok)
	}
	// Client credentials from the keyring are exchanged like any other.
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionKeyringSet, ipc.KeyWorkspace, "ring-sa", ipc.KeyKind, ipc.KindClientCredentials, ipc.KeySecret, cc); err != nil {
		t.Fatal(err)
	}
	if tok := td.Token(t, ipc.KeyWorkspace, "ring-sa"); tok.Kind != ipc.KindClientCredentials || api.Count("client_credentials") != 1 {
		t.Fatalf("keyring client credentials: %+v, %d exchanges", tok, api.Count("client_credentials"))
	}
	// The item is really in the Secret Service.
	if s, err := ring.Get(t.Context(), "ring-ws"); err != nil || s.Value != "bl_ring_key" {
		t.Fatalf("keyring item: %v", err)
	}
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionKeyringDelete, ipc.KeyWorkspace, "ring-ws"); err != nil {
		t.Fatalf("keyring_delete: %v", err)
	}
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionGet, ipc.KeyWorkspace, "ring-ws"); ipc.ErrorCode(err) != ipc.CodeNoCredentials {
		t.Fatalf("after logout: %v, want no_credentials", err)
	}
}

func TestMissingKeyringIsAClearMessageAndOtherSourcesWork(t *testing.T) {
	requireTestKeyring(t)
	if os.Getenv("BLAUTH_KEYRING_CHILD") == "" {
		// go-keyring keeps one bus connection per process: run this case in a fresh process
		// whose session bus address leads nowhere.
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissingKeyringIsAClearMessageAndOtherSourcesWork$", "-test.v")
		cmd.Env = append(os.Environ(), "BLAUTH_KEYRING_CHILD=1", "DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent/bus")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	ring := &keyring.Keyring{Timeout: 2 * time.Second}
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=envws", "BL_API_KEY=env_key"}, Mutate: func(c *daemon.Config) { c.Keyring = ring }})
	_, err := td.Do(t, ipc.KeyAction, ipc.ActionKeyringSet, ipc.KeyWorkspace, "x", ipc.KeyKind, ipc.KindAPIKey, ipc.KeySecret, "k")
	if ipc.ErrorCode(err) != ipc.CodeKeyringUnavailable {
		t.Fatalf("keyring_set without a Secret Service: %v, want keyring_unavailable", err)
	}
	if tok := td.Token(t); tok.Token != "env_key" {
		t.Fatal("other sources stopped working without a keyring")
	}
}
