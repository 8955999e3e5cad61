// Package notify wakes any number of waiters when something changed, without ever making the
// one that announces the change wait for them.
package notify

import (
	"sync"
	"sync/atomic"
)

// Broadcast announces changes. Waiters take the channel Wait returns, then block on it; Notify
// closes that channel (waking every one of them at once) and starts a new one. A waiter that
// was busy when Notify ran finds its channel already closed, so no change is missed between two
// looks. The zero value is ready to use; a Broadcast is safe for concurrent use and must not be
// copied after first use.
type Broadcast struct {
	mu  sync.Mutex
	ch  chan struct{}
	gen atomic.Uint64
}

// Generation counts the Notify calls so far: a value read before looking at what it announces
// still equals it later only if nothing was announced in between.
func (b *Broadcast) Generation() uint64 { return b.gen.Load() }

// Wait returns a channel that is closed at the next Notify.
func (b *Broadcast) Wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// Notify wakes every waiter. It never blocks.
func (b *Broadcast) Notify() {
	b.gen.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
