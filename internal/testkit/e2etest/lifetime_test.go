package e2etest

import (
	"testing"
	"time"
)

// The figures the suites relied on before they took them from RefreshPeriod: a 60 s token under
// the daemon's default 30 s min_ttl is refreshed 10.5–12 s after its issue; without a min_ttl,
// with 35–40 % of its life gone.
func TestRefreshPeriod(t *testing.T) {
	for _, c := range []struct {
		life, minTTL, shortest, longest time.Duration
	}{
		{60 * time.Second, 30 * time.Second, 10500 * time.Millisecond, 12 * time.Second},
		{TokenTTL, MinTTL, 3500 * time.Millisecond, 4 * time.Second},
		{40 * time.Second, 30 * time.Second, 3500 * time.Millisecond, 4 * time.Second},
		{60 * time.Second, 0, 21 * time.Second, 24 * time.Second},
		// A min_ttl near the life: the refresh comes at the floor, a second (or a twentieth) of life left.
		{20 * time.Second, 19 * time.Second, time.Second, time.Second},
	} {
		s, l := RefreshPeriod(c.life, c.minTTL)
		if s != c.shortest || l != c.longest {
			t.Errorf("RefreshPeriod(%s, %s) = %s, %s; want %s, %s", c.life, c.minTTL, s, l, c.shortest, c.longest)
		}
	}
}
