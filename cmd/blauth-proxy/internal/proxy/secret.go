package proxy

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"strings"
)

// Secret is a proxy's per-run secret: 32 random bytes, base64url without padding (43
// characters). A loopback port is reachable by every user of the machine, so the proxy forwards
// nothing that does not carry it. Its String never shows it.
type Secret struct{ b []byte }

// NewSecret draws a new secret from crypto/rand.
func NewSecret() Secret {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails (Go 1.24+): it crashes the program instead
	return Secret{b: []byte(base64.RawURLEncoding.EncodeToString(raw))}
}

// Value is the secret itself, to hand to the one child process that may use it.
func (s Secret) Value() string { return string(s.b) }

// String hides the secret, so that printing a Secret by mistake shows nothing.
func (s Secret) String() string { return "[secret]" }

// matches reports whether a header value is "Bearer <secret>" (the scheme in any case), in
// time that does not depend on how much of the secret it holds.
func (s Secret) matches(value string) bool {
	const scheme = "bearer "
	if len(s.b) == 0 || len(value) < len(scheme) || !strings.EqualFold(value[:len(scheme)], scheme) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(value[len(scheme):])), s.b) == 1
}
