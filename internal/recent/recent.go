// Package recent keeps the last few values a hot path made, so that making the same one again
// costs no allocation: the daemon serves most requests from a few credentials, and each would
// otherwise build the same credential and the same provenance strings anew.
package recent

import "sync/atomic"

// Size is how many values a Cache keeps.
const Size = 8

// Cache keeps the last Size values made, each under its key, replaced round-robin. Values must
// never be changed once made: every caller with the same key shares one. The zero value is
// ready; safe for concurrent use.
type Cache[K comparable, V any] struct {
	slots [Size]atomic.Pointer[entry[K, V]]
	next  atomic.Uint32
}

type entry[K comparable, V any] struct {
	key K
	val V
}

// Get returns the value kept for k, or makes it with mk(k) and keeps it.
func (c *Cache[K, V]) Get(k K, mk func(K) V) V {
	if v, ok := c.Load(k); ok {
		return v
	}
	v := mk(k)
	c.Store(k, v)
	return v
}

// Load returns the value kept for k, if any.
func (c *Cache[K, V]) Load(k K) (V, bool) {
	for i := range c.slots {
		if e := c.slots[i].Load(); e != nil && e.key == k {
			return e.val, true
		}
	}
	var zero V
	return zero, false
}

// Store keeps v for k: in place of the value kept for k, else in place of the oldest.
func (c *Cache[K, V]) Store(k K, v V) {
	e := &entry[K, V]{key: k, val: v}
	for i := range c.slots {
		if old := c.slots[i].Load(); old != nil && old.key == k && c.slots[i].CompareAndSwap(old, e) {
			return
		}
	}
	c.slots[c.next.Add(1)%Size].Store(e)
}
