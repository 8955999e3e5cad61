// Package memkeyring is an in-memory keyring.KeyringStore for tests: the OS keyring's behaviour
// (a missing item is keyring.ErrKeyringNotFound) without a Secret Service.
package memkeyring

import (
	"context"
	"sort"
	"sync"

	"github.com/blauth/blauth/sources/keyring"
)

// Keyring holds secrets by workspace. Err, when set, is what every call returns (an unavailable
// keyring). Safe for concurrent use.
type Keyring struct {
	mu    sync.Mutex
	items map[string]keyring.Secret
	err   error
}

// New returns a keyring holding items (which it copies).
func New(items map[string]keyring.Secret) *Keyring {
	k := &Keyring{items: map[string]keyring.Secret{}}
	for w, s := range items {
		k.items[w] = s
	}
	return k
}

// SetErr makes every call fail with err (nil: work again).
func (k *Keyring) SetErr(err error) { k.mu.Lock(); k.err = err; k.mu.Unlock() }

// Put stores a secret without going through Set's checks.
func (k *Keyring) Put(workspace string, s keyring.Secret) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.items[workspace] = s
}

// Get implements keyring.KeyringStore.
func (k *Keyring) Get(_ context.Context, ws string) (keyring.Secret, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return keyring.Secret{}, k.err
	}
	s, ok := k.items[ws]
	if !ok {
		return s, keyring.ErrNotFound
	}
	return s, nil
}

// Set implements keyring.KeyringStore.
func (k *Keyring) Set(_ context.Context, ws string, s keyring.Secret) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return k.err
	}
	k.items[ws] = s
	return nil
}

// Delete implements keyring.KeyringStore.
func (k *Keyring) Delete(_ context.Context, ws string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return k.err
	}
	if _, ok := k.items[ws]; !ok {
		return keyring.ErrNotFound
	}
	delete(k.items, ws)
	return nil
}

// List implements keyring.KeyringStore.
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
