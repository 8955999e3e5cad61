package ipc

import "time"

// Status is the answer to action=status, carried as JSON in json= (split over several lines from
// version 2: read it with Message.Long). It describes the daemon as the asking caller sees it
// (its .env and environment included) and never holds a secret. Clients must ignore fields they
// do not know; empty fields are left out.
type Status struct {
	Version    string            `json:"version"`
	PID        int               `json:"pid"`
	Socket     string            `json:"socket"`
	Manager    string            `json:"manager,omitempty"`
	Started    time.Time         `json:"started"`
	Default    string            `json:"default_workspace,omitempty"`
	Workspaces []WorkspaceStatus `json:"workspaces"`
	Cached     []CachedStatus    `json:"cached"`
	Dotenvs    int               `json:"watched_dotenv_files"`
	// SourceErrors are the problems of every source the caller's answers draw on (the bl
	// config, the keyring, the file watcher, its .env), each listed once.
	SourceErrors []SourceError `json:"source_errors,omitempty"`
	// Keyring says whether the daemon uses the OS keyring (nil from a daemon too old to say).
	Keyring *KeyringStatus `json:"keyring,omitempty"`
	// DefaultSource is what chose Default, KIND:WHERE (as KeyWorkspaceSource).
	DefaultSource string `json:"default_workspace_source,omitempty"`
}

// KeyringStatus says whether the daemon uses the OS keyring, and why not: it decides at start
// (a flag, BLAUTH_NO_KEYRING, blauth's config file, or no D-Bus session bus turn it off).
type KeyringStatus struct {
	On bool `json:"on"`
	// Off is why it is off, "" when it is on.
	Off string `json:"off,omitempty"`
}

// WorkspaceStatus is one workspace in a Status: which credential wins, what it shadows, and the
// state of its token.
type WorkspaceStatus struct {
	Workspace   string    `json:"workspace"`
	Kind        string    `json:"kind,omitempty"`
	Source      string    `json:"source,omitempty"`
	Shadows     []string  `json:"shadows,omitempty"`
	Expiry      time.Time `json:"expiry,omitzero"`
	RefreshAt   time.Time `json:"refresh_at,omitzero"`
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// Refused is set when the token endpoint refused the credential for good.
	Refused bool `json:"refused,omitempty"`
	// WriteBackError is why the last refreshed session is not saved in its source yet.
	WriteBackError string `json:"write_back_error,omitempty"`
	// Lifetime, ClockSkew and RefreshTokenRotates are those of the cached token (CachedStatus).
	Lifetime            int64  `json:"lifetime_seconds,omitempty"`
	ClockSkew           int64  `json:"clock_skew_seconds,omitempty"`
	RefreshTokenRotates *bool  `json:"refresh_token_rotates,omitempty"`
	Alert               string `json:"alert,omitempty"`
	// Error is why the workspace cannot be served at all.
	Error string `json:"error,omitempty"`
	// Warnings are mistakes in the workspace's sources that may be why it is not served as
	// meant, each with its fix: a credentials key of the bl config that no Blaxel tool reads.
	Warnings []string `json:"warnings,omitempty"`
}

// CachedStatus is one token the daemon holds, whichever workspace it now serves.
type CachedStatus struct {
	Workspace      string    `json:"workspace"`
	Kind           string    `json:"kind"`
	Source         string    `json:"source"`
	Expiry         time.Time `json:"expiry,omitzero"`
	RefreshAt      time.Time `json:"refresh_at,omitzero"`
	LastRefresh    time.Time `json:"last_refresh,omitzero"`
	LastError      string    `json:"last_error,omitempty"`
	Refused        bool      `json:"refused,omitempty"`
	NextTry        time.Time `json:"next_try,omitzero"`
	Exchanges      int       `json:"exchanges"`
	WriteBackError string    `json:"write_back_error,omitempty"`
	// KeptFresh is set when the token is refreshed even if nobody asks: the daemon holds the
	// credential itself (its environment, the keyring, the bl config), or a watcher follows it.
	KeptFresh bool `json:"kept_fresh,omitempty"`
	// Lifetime is the seconds the endpoint's tokens for this credential are issued for, once
	// one was seen.
	Lifetime int64 `json:"lifetime_seconds,omitempty"`
	// ClockSkew is how many seconds the daemon's clock was ahead of the token endpoint's at the
	// last exchange (negative: behind), when that is more than 30: expiry and refresh_at are
	// on the daemon's clock, corrected for it.
	ClockSkew int64 `json:"clock_skew_seconds,omitempty"`
	// RefreshTokenRotates says, for a bl login session once the daemon has refreshed it,
	// whether the endpoint's last refresh issued a new refresh token. When it does, a
	// long-running process that read the session once fails at its own first refresh: the
	// daemon has used up the refresh token it holds (docs/CLIENTS.md).
	RefreshTokenRotates *bool `json:"refresh_token_rotates,omitempty"`
	// Alert, when set, says the credential can no longer be refreshed, and what to run. It is
	// cleared by the next refresh that works.
	Alert string `json:"alert,omitempty"`
}

// SourceError is a source that could not be used, and why.
type SourceError struct {
	Source SourceRef `json:"source"`
	Error  string    `json:"error"`
}

// SourceRef names a source: its kind (dotenv, caller_env, daemon_env, keyring, bl_config,
// watcher) and where it is (a path, a variable, a keyring item).
type SourceRef struct {
	Kind  string `json:"kind"`
	Where string `json:"where"`
}
