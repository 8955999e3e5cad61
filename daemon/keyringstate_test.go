package daemon_test

import (
	"strings"
	"testing"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/internal/testkit/memkeyring"
	"github.com/blauth/blauth/ipc"
)

// A daemon without the keyring says why in status and in ping, so that login --api-key can ask
// before it reads a secret.
func TestKeyringStateInStatusAndPing(t *testing.T) {
	off := daemontest.Start(t, daemontest.Options{Mutate: func(c *daemon.Config) { c.KeyringOff = "BLAUTH_NO_KEYRING=1 is set" }})
	if st := status(t, off); st.Keyring == nil || st.Keyring.On || st.Keyring.Off != "BLAUTH_NO_KEYRING=1 is set" {
		t.Errorf("status of a daemon without keyring: %+v", st.Keyring)
	}
	resp, err := off.Do(t, ipc.KeyAction, ipc.ActionPing)
	if err != nil || resp.Value(ipc.KeyKeyring) != "off" || resp.Value(ipc.KeyKeyringOff) != "BLAUTH_NO_KEYRING=1 is set" {
		t.Errorf("ping: %v %v", resp, err)
	}
	_, err = off.Do(t, ipc.KeyAction, ipc.ActionKeyringSet, ipc.KeyWorkspace, "acme", ipc.KeyKind, ipc.KindAPIKey, ipc.KeySecret, "bl_FAKE")
	if ipc.ErrorCode(err) != ipc.CodeKeyringUnavailable || !strings.Contains(err.Error(), "BLAUTH_NO_KEYRING=1 is set") {
		t.Errorf("keyring_set: %v; want keyring_unavailable saying why", err)
	}

	on := daemontest.Start(t, daemontest.Options{Keyring: memkeyring.New(nil)})
	if st := status(t, on); st.Keyring == nil || !st.Keyring.On || st.Keyring.Off != "" {
		t.Errorf("status of a daemon with a keyring: %+v", st.Keyring)
	}
	if resp, err := on.Do(t, ipc.KeyAction, ipc.ActionPing); err != nil || resp.Value(ipc.KeyKeyring) != "on" {
		t.Errorf("ping: %v %v", resp, err)
	}
}
