//go:build real

package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/sources/keyring"
)

// TestLoginLogoutWithTheRealKeyring stores secrets through the helper into a real Secret Service
// (gnome-keyring, under .ci/with-keyring.sh) and checks the daemon serves them at once.
func TestLoginLogoutWithTheRealKeyring(t *testing.T) {
	if h := os.Getenv("BLAUTH_TEST_KEYRING_HOME"); h == "" || h != os.Getenv("HOME") {
		t.Fatal("the keyring suite needs a disposable Secret Service: run it under .ci/with-keyring.sh")
	}
	ring := &keyring.Keyring{Timeout: 5 * time.Second}
	t.Cleanup(func() {
		_ = ring.Delete(context.Background(), "kr-key")
		_ = ring.Delete(context.Background(), "kr-sa")
	})
	api := newAPI(t)
	cc := api.AddClient("kr", "secret")
	startDaemon(t, daemonOpts{api: api, keyring: ring})

	r := runHelper(t, "bl_from_stdin\n", "login", "kr-key", "--api-key")
	mustCode(t, r, 0)
	if r.stdout != "" || strings.Contains(r.stderr, "bl_from_stdin") {
		t.Fatalf("login printed the secret or wrote to stdout: %s", r)
	}
	if r := runHelper(t, "", "token", "kr-key"); r.code != 0 || r.stdout != "bl_from_stdin\n" {
		t.Fatalf("token after login: %s", r)
	}
	mustCode(t, runHelper(t, cc+"\n", "login", "kr-sa", "--client-credentials"), 0)
	if r := runHelper(t, "", "token", "kr-sa"); r.code != 0 || strings.Count(r.stdout, ".") != 2 {
		t.Fatalf("service account from the keyring: %s", r)
	}
	if r := runHelper(t, "", "login", "kr-key", "--api-key"); r.code == 0 {
		t.Fatalf("an empty secret was accepted: %s", r)
	}
	mustCode(t, runHelper(t, "", "logout", "kr-key"), 0)
	mustFail(t, runHelper(t, "", "token", "kr-key"), exitNoCreds)
	mustFail(t, runHelper(t, "", "logout", "kr-key"), exitNoCreds)
}
