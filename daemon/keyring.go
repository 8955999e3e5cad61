package daemon

import (
	"time"

	"github.com/blauth/blauth/sources"
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
		if err := sources.CheckSessionBus(busCheckTimeout); err != nil {
			c.KeyringOff = err.Error()
		} else {
			c.Keyring = &sources.Keyring{Timeout: c.KeyringTimeout, Log: c.Log.With().Str("component", "keyring").Logger()}
		}
	}
	switch {
	case c.Keyring != nil:
		c.KeyringOff = ""
	case c.KeyringOff == "":
		c.KeyringOff = "turned off in the daemon's configuration"
	}
}

// logKeyring says at start, in one line, that the keyring is off and why.
func (d *Daemon) logKeyring() {
	if d.cfg.KeyringOff != "" {
		d.log.Info().Str("reason", d.cfg.KeyringOff).
			Msg("OS keyring off: secrets saved with blauth-helper login --api-key are not read; every other source is")
	}
}
