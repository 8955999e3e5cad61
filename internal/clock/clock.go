// Package clock is the wall clock the daemon judges token expiry by, and a settable one for tests.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time. Now must return a time without a monotonic reading (time.Now().Round(0)):
// token expiry is a wall-clock matter, and the monotonic clock stops during suspend.
type Clock interface{ Now() time.Time }

// Wall is the system's wall clock.
type Wall struct{}

// Now implements Clock.
func (Wall) Now() time.Time { return time.Now().Round(0) }

// Fake is a clock that moves only when told to. NewFake sets where it starts; the zero value
// starts at 2030-03-17 17:46:40 UTC, a fixed instant. Safe for concurrent use.
type Fake struct {
	mu sync.Mutex
	t  time.Time
}

// NewFake returns a fake clock set to t.
func NewFake(t time.Time) *Fake { return &Fake{t: t.Round(0)} }

// Now implements Clock.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nowLocked()
}

func (c *Fake) nowLocked() time.Time {
	if c.t.IsZero() {
		c.t = time.Unix(1_900_000_000, 0)
	}
	return c.t
}

// Set moves the clock to t.
func (c *Fake) Set(t time.Time) { c.mu.Lock(); c.t = t.Round(0); c.mu.Unlock() }

// Add moves the clock by d. Concurrent Adds all count.
func (c *Fake) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.nowLocked().Add(d)
}
