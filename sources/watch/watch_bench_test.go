package watch

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkWatchLatency measures how long after a rename-save returns onChange is called: the
// debounce plus the watcher's own delay. It reports the median and 99th percentile; ns/op is
// suppressed since it would only repeat them. At most watchBenchMaxEdits edits are made.
func BenchmarkWatchLatency(b *testing.B) {
	for _, bc := range []struct {
		name     string
		debounce time.Duration
	}{
		{"debounce=20ms", 20 * time.Millisecond},
		{"debounce=default", 0},
	} {
		b.Run(bc.name, func(b *testing.B) { benchmarkWatchLatency(b, bc.debounce) })
	}
}

const watchBenchMaxEdits = 500

func benchmarkWatchLatency(b *testing.B, debounce time.Duration) {
	w, err := New(zerolog.Nop(), debounce)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
	}()

	path := filepath.Join(b.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("v0"), 0o600); err != nil {
		b.Fatal(err)
	}
	called := make(chan time.Time, 1)
	stop, err := w.Watch(path, func() {
		select {
		case called <- time.Now():
		default:
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer stop()

	edits := min(b.N, watchBenchMaxEdits)
	latencies := make([]time.Duration, 0, edits)
	b.ResetTimer()
	for i := range edits {
		select { // a late duplicate call from the previous edit must not be counted
		case <-called:
		default:
		}
		renameSave(b, path, "v"+strconv.Itoa(i+1))
		saved := time.Now()
		select {
		case at := <-called:
			latencies = append(latencies, at.Sub(saved))
		case <-time.After(5 * time.Second):
			b.Fatalf("edit %d not reported within 5s", i)
		}
	}
	b.StopTimer()

	slices.Sort(latencies)
	ms := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(float64(len(latencies)), "edits")
	b.ReportMetric(0, "ns/op")
}
