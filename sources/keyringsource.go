package sources

import (
	"context"
	"errors"
	"sync"

	"github.com/rs/zerolog"
)

// KeyringStore is the part of *Keyring the daemon uses: the secrets saved with blauth-helper
// login, one per workspace.
type KeyringStore interface {
	Get(ctx context.Context, workspace string) (KeyringSecret, error)
	Set(ctx context.Context, workspace string, s KeyringSecret) error
	Delete(ctx context.Context, workspace string) error
	List(ctx context.Context) ([]string, error)
}

// KeyringSource is a snapshot of the keyring's secrets, read at start and again on Load (after
// blauth-helper login or logout, and on reload): the keyring is never asked on a request's path.
// When the keyring does not answer, the last good snapshot is kept. Safe for concurrent use.
type KeyringSource struct {
	store KeyringStore
	log   zerolog.Logger

	mu   sync.RWMutex
	ring map[string]KeyringSecret
	err  error
}

// NewKeyringSource returns a source of store's secrets; it reads nothing until Load.
func NewKeyringSource(store KeyringStore, log zerolog.Logger) *KeyringSource {
	return &KeyringSource{store: store, log: log}
}

// Load reads every secret of the store again.
func (k *KeyringSource) Load(ctx context.Context) {
	ring := map[string]KeyringSecret{}
	names, err := k.store.List(ctx)
	for _, n := range names {
		s, gerr := k.store.Get(ctx, n)
		if gerr == nil {
			ring[n] = s
		} else if !errors.Is(gerr, ErrKeyringNotFound) {
			err = gerr
			break
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.err = err
	if err != nil {
		k.log.Warn().Err(err).Msg("the OS keyring did not answer; keyring credentials are unavailable, every other source still works")
		if k.ring != nil {
			return // keep the last good view
		}
	}
	k.ring = ring
}

// Secret returns the secret saved for workspace.
func (k *KeyringSource) Secret(workspace string) (KeyringSecret, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	s, ok := k.ring[workspace]
	return s, ok
}

// Workspaces lists the workspaces with a secret.
func (k *KeyringSource) Workspaces() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]string, 0, len(k.ring))
	for w := range k.ring {
		out = append(out, w)
	}
	return out
}

// Errors says why the keyring could not be read, once.
func (k *KeyringSource) Errors() []SourceError {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.err == nil {
		return nil
	}
	return []SourceError{{Provenance{SourceKeyring, DefaultKeyringService}, k.err.Error()}}
}

// SourceError is a source that cannot be used now, and why. It never holds a secret.
type SourceError struct {
	Source Provenance `json:"source"`
	Error  string     `json:"error"`
}
