package keyring

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/blauth/blauth/sources"
	"github.com/rs/zerolog"
)

// Store is the part of *Keyring the daemon uses: the secrets saved with blauth-helper
// login, one per workspace.
type Store interface {
	Get(ctx context.Context, workspace string) (Secret, error)
	Set(ctx context.Context, workspace string, s Secret) error
	Delete(ctx context.Context, workspace string) error
	List(ctx context.Context) ([]string, error)
}

// Source is a snapshot of the keyring's secrets, read at start and again on Load (after
// blauth-helper login or logout, and on reload): the keyring is never asked on a request's path.
// When the keyring does not answer, the last good snapshot is kept. Safe for concurrent use.
type Source struct {
	store Store
	log   zerolog.Logger

	mu   sync.RWMutex
	ring map[string]Secret
	err  error
}

// NewSource returns a source of store's secrets; it reads nothing until Load.
func NewSource(store Store, log zerolog.Logger) *Source {
	return &Source{store: store, log: log}
}

// Load reads every secret of the store again.
func (k *Source) Load(ctx context.Context) {
	ring := map[string]Secret{}
	names, err := k.store.List(ctx)
	for _, n := range names {
		s, gerr := k.store.Get(ctx, n)
		if gerr == nil {
			ring[n] = s
		} else if !errors.Is(gerr, ErrNotFound) {
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
func (k *Source) Secret(workspace string) (Secret, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	s, ok := k.ring[workspace]
	return s, ok
}

// Workspaces lists the workspaces with a secret.
func (k *Source) Workspaces() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return slices.Collect(maps.Keys(k.ring))
}

// Errors says why the keyring could not be read, once.
func (k *Source) Errors() []sources.SourceError {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.err == nil {
		return nil
	}
	return []sources.SourceError{{Source: sources.Provenance{Kind: sources.SourceKeyring, Where: DefaultService}, Error: k.err.Error()}}
}
