// Package backoff computes capped, jittered exponential delays between retries. It is the one
// place blauth decides how long to wait after a failure.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy describes the delays. The zero value is usable: 1s doubling to 5m, with jitter 0.5.
// A zero field takes its default. A Policy is a value; it is safe for concurrent use.
type Policy struct {
	Base   time.Duration // first delay (1s)
	Max    time.Duration // cap before jitter (5m)
	Factor float64       // growth per attempt (2; below 1 is the default)
	// Jitter is the fraction of each delay drawn at random, from 0 to 1 ("full jitter"); 0
	// means the default, 0.5. A negative value means no jitter at all.
	Jitter float64
}

func (p Policy) withDefaults() Policy {
	if p.Base <= 0 {
		p.Base = time.Second
	}
	if p.Max <= 0 {
		p.Max = 5 * time.Minute
	}
	if p.Factor < 1 {
		p.Factor = 2
	}
	switch {
	case p.Jitter < 0:
		p.Jitter = 0
	case p.Jitter == 0 || p.Jitter > 1:
		p.Jitter = 0.5
	}
	return p
}

// Delay returns the wait before retry number attempt (1 for the first retry). With jitter j the
// result lies in [(1-j)·d, d], where d = min(Max, Base·Factor^(attempt-1)).
func (p Policy) Delay(attempt int) time.Duration {
	p = p.withDefaults()
	d := float64(p.Base)
	for i := 1; i < attempt && d < float64(p.Max); i++ {
		d *= p.Factor
	}
	if d > float64(p.Max) {
		d = float64(p.Max)
	}
	d -= d * p.Jitter * rand.Float64()
	return time.Duration(d)
}

// Bound caps a delay so that the wait never exceeds frac of the time left before a deadline (a
// token's expiry): a token that is still valid is never lost to backoff once the endpoint is
// back. It never returns less than floor, nor more than d. A zero left means no deadline.
func Bound(d, left time.Duration, frac float64, floor time.Duration) time.Duration {
	if left <= 0 {
		return d
	}
	c := time.Duration(float64(left) * frac)
	if c < floor {
		c = floor
	}
	if d > c {
		return c
	}
	return d
}
