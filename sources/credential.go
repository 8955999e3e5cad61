package sources

import (
	"fmt"
	"strings"

	"github.com/blauth/blauth/ipc"
)

// Source kinds, highest precedence first.
const (
	SourceDotenv    = "dotenv"     // the caller's .env, in the directory it sent
	SourceCallerEnv = "caller_env" // BL_* variables the caller sent
	SourceDaemonEnv = "daemon_env" // blauthd's own environment
	SourceKeyring   = "keyring"    // the OS keyring (blauth-helper login)
	SourceBLConfig  = "bl_config"  // $HOME/.blaxel/config.yaml
)

// Kinds of the per-directory places (docs/SOURCES.md ranks them among those above), and of
// blauth's own config file.
const (
	SourceBlaxelTOML   = "blaxel_toml"   // the caller's blaxel.toml: its workspace, its [env] table
	SourceRequest      = "request"       // the request's workspace= (blauth-helper -w)
	SourceRoute        = "route"         // a routes: entry of blauth's config file
	SourceBlauthConfig = "blauth_config" // blauth's config file, when it cannot be read again
)

// Provenance says where a credential was found.
type Provenance struct {
	Kind string `json:"kind"`
	// Where is the file path (dotenv, bl_config), the variable name (environments) or the keyring
	// service and user.
	Where string `json:"where"`
}

func (p Provenance) String() string { return p.Kind + ":" + p.Where }

// Credential is one credential for one workspace. Its secret fields are never logged: String
// and the JSON form of Public show only the kind, workspace and provenance.
type Credential struct {
	Workspace string
	Kind      string
	// APIKey is the key itself, for ipc.KindAPIKey.
	APIKey string
	// ClientCredentials is BL_CLIENT_CREDENTIALS as given: base64 of "id:secret", or the raw text.
	ClientCredentials string
	// AccessToken, RefreshToken and DeviceCode are a bl login session, for ipc.KindLogin.
	AccessToken, RefreshToken, DeviceCode string
	// BaseURL is the API base the credential is exchanged against (…/v0).
	BaseURL string
	Source  Provenance
}

// String describes c without its secrets.
func (c *Credential) String() string {
	return fmt.Sprintf("%s credential for %s from %s", c.Kind, c.Workspace, c.Source)
}

// Key identifies what the daemon caches a token under. Two callers holding the same service
// account secret for the same endpoint share one token, whichever source they got it from. A
// login session is keyed by where it lives, so that a rotated refresh token written back to the
// file does not orphan the cached token. The key holds the secret itself (it is compared on every
// request, so it is not hashed): it lives only in memory and is never logged or sent.
func (c *Credential) Key() string { return string(c.AppendKey(nil)) }

// AppendKey appends Key to b: a key built in a caller's buffer and looked up in a map costs no
// allocation.
func (c *Credential) AppendKey(b []byte) []byte {
	join := func(parts ...string) []byte {
		for i, p := range parts {
			if i > 0 {
				b = append(b, 0)
			}
			b = append(b, p...)
		}
		return b
	}
	switch c.Kind {
	case ipc.KindLogin:
		return join("login", c.Source.Kind, c.Source.Where, c.Workspace, c.BaseURL)
	case ipc.KindClientCredentials:
		return join("cc", c.ClientCredentials, c.Workspace, c.BaseURL)
	default:
		return join("key", c.APIKey, c.Workspace)
	}
}

// API bases Blaxel's SDKs know, by BL_ENV value.
var envBases = map[string]string{
	"prod":  "https://api.blaxel.ai/v0",
	"dev":   "https://api.blaxel.dev/v0",
	"local": "http://localhost:8080/v0",
}

// DefaultBaseURL is the production API base.
const DefaultBaseURL = "https://api.blaxel.ai/v0"

// BaseURL applies Blaxel's rule: BL_API_URL, else BL_ENV, else the workspace's env: in the CLI
// config, else prod.
func BaseURL(apiURL, blEnv, workspaceEnv string) string {
	if apiURL != "" {
		return strings.TrimRight(apiURL, "/")
	}
	for _, e := range []string{blEnv, workspaceEnv} {
		if b, ok := envBases[strings.ToLower(strings.TrimSpace(e))]; ok {
			return b
		}
	}
	return DefaultBaseURL
}

// SourceError is a source that cannot be used now, and why. It never holds a secret.
type SourceError struct {
	Source Provenance `json:"source"`
	Error  string     `json:"error"`
}
