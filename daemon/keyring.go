package daemon

import (
	"context"
	"time"

	"github.com/blauth/blauth/sources/keyring"
)

// busCheckTimeout bounds the connection to the session bus that tells, at start, whether the
// OS keyring can be used.
const busCheckTimeout = time.Second

// decideKeyring chooses, once, whether the daemon uses the OS keyring: the one given (tests), the
// OS keyring when OSKeyring asks for it and a session bus answers, or none, with the reason in
// KeyringOff. Without a bus the keyring is off for the daemon's life: it is said once, at start
// and in status, instead of failing in every answer.
func (c *Config) decideKeyring() {
	if c.Keyring == nil && c.OSKeyring {
		c.Keyring, c.KeyringOff = osKeyring(c)
	}
	switch {
	case c.Keyring != nil:
		c.KeyringOff = ""
	case c.KeyringOff == "":
		c.KeyringOff = "turned off in the daemon's configuration"
	}
}

// osKeyring is the OS keyring when it can be used: a session bus answers, and a Secret Service
// is on it or can be started by it. Otherwise it is nil and the reason: a server's bus without a
// Secret Service stays without one, so it is said once rather than in every answer. A keyring
// that is there but locked, or slow, is kept: unlocking it makes it work.
func osKeyring(c *Config) (keyring.Store, string) {
	if err := keyring.CheckSessionBus(busCheckTimeout); err != nil {
		return nil, err.Error()
	}
	k := &keyring.Keyring{Timeout: c.KeyringTimeout, Log: c.Log.With().Str("component", "keyring").Logger()}
	ctx, cancel := context.WithTimeout(context.Background(), c.KeyringTimeout)
	defer cancel()
	if err := k.Probe(ctx); keyring.NoSecretService(err) {
		return nil, "no Secret Service on the D-Bus session bus (nothing provides org.freedesktop.secrets)"
	}
	return k, ""
}
