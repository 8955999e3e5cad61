package backoff

import (
	"testing"
	"time"
)

func TestDelayGrowsAndIsCapped(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: 2 * time.Second, Factor: 2, Jitter: 0.25}
	for attempt := 1; attempt <= 12; attempt++ {
		want := 100 * time.Millisecond << (attempt - 1)
		if want > 2*time.Second || want <= 0 {
			want = 2 * time.Second
		}
		for i := 0; i < 200; i++ {
			d := p.Delay(attempt)
			if d > want || d < want*3/4 {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, want*3/4, want)
			}
		}
	}
}

func TestDelayIsJittered(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Minute, Jitter: 1}
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		seen[p.Delay(3)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 delays gave only %d distinct values: not jittered", len(seen))
	}
}

func TestBound(t *testing.T) {
	tests := []struct {
		name          string
		d, left       time.Duration
		frac          float64
		floor, expect time.Duration
	}{
		{"no deadline keeps delay", time.Minute, 0, 0.1, time.Second, time.Minute},
		{"short delay kept", 2 * time.Second, time.Hour, 0.1, time.Second, 2 * time.Second},
		{"capped to fraction of life", 5 * time.Minute, 10 * time.Minute, 0.1, time.Second, time.Minute},
		{"floor when almost expired", time.Minute, 3 * time.Second, 0.1, time.Second, time.Second},
		{"floor never exceeds delay", 200 * time.Millisecond, 3 * time.Second, 0.1, time.Second, 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Bound(tt.d, tt.left, tt.frac, tt.floor); got != tt.expect {
				t.Fatalf("Bound(%v, %v, %v, %v) = %v, want %v", tt.d, tt.left, tt.frac, tt.floor, got, tt.expect)
			}
		})
	}
}

func TestJitterZeroIsTheDefaultAndNegativeIsNone(t *testing.T) {
	none := Policy{Base: time.Second, Jitter: -1}
	for i := 0; i < 20; i++ {
		if d := none.Delay(2); d != 2*time.Second {
			t.Fatalf("negative jitter: %v, want exactly 2s", d)
		}
	}
	def := Policy{Base: time.Second}
	for i := 0; i < 200; i++ {
		if d := def.Delay(1); d < 500*time.Millisecond || d > time.Second {
			t.Fatalf("zero jitter (the default, 0.5): %v outside [0.5s, 1s]", d)
		}
	}
}
