// Package memkeyring is an in-memory sources.KeyringStore for tests: the OS keyring's behaviour
// (a missing item is sources.ErrKeyringNotFound) without a Secret Service.
package memkeyring

import (
	"context"
	"sort"
	"sync"

	"github.com/blauth/blauth/sources"
)

// Keyring holds secrets by workspace. Err, when set, is what every call returns (an unavailable
// keyring). Safe for concurrent use.
type Keyring struct {
	mu    sync.Mutex
	items map[string]sources.KeyringSecret
	err   error
}

// New returns a keyring holding items (which it copies).
func New(items map[string]sources.KeyringSecret) *Keyring {
	k := &Keyring{items: map[string]sources.KeyringSecret{}}
	for w, s := range items {
		k.items[w] = s
	}
	return k
}

// SetErr makes every call fail with err (nil: work again).
func (k *Keyring) SetErr(err error) { k.mu.Lock(); k.err = err; k.mu.Unlock() }

// Put stores a secret without going through Set's checks.
func (k *Keyring) Put(workspace string, s sources.KeyringSecret) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.items[workspace] = s
}

// Get implements sources.KeyringStore.
func (k *Keyring) Get(_ context.Context, ws string) (sources.KeyringSecret, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return sources.KeyringSecret{}, k.err
	}
	s, ok := k.items[ws]
	if !ok {
		return s, sources.ErrKeyringNotFound
	}
	return s, nil
}

// Set implements sources.KeyringStore.
func (k *Keyring) Set(_ context.Context, ws string, s sources.KeyringSecret) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return k.err
	}
	k.items[ws] = s
	return nil
}

// Delete implements sources.KeyringStore.
func (k *Keyring) Delete(_ context.Context, ws string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return k.err
	}
	if _, ok := k.items[ws]; !ok {
		return sources.ErrKeyringNotFound
	}
	delete(k.items, ws)
	return nil
}

// List implements sources.KeyringStore.
func (k *Keyring) List(context.Context) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return nil, k.err
	}
	out := make([]string, 0, len(k.items))
	for w := range k.items {
		out = append(out, w)
	}
	sort.Strings(out)
	return out, nil
}
