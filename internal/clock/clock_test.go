package clock

import (
	"sync"
	"testing"
	"time"
)

func TestFakeStartsAtAFixedInstantAndMovesOnlyWhenTold(t *testing.T) {
	var c Fake
	if got := c.Now(); !got.Equal(time.Unix(1_900_000_000, 0)) {
		t.Fatalf("zero Fake starts at %v", got)
	}
	c.Add(time.Minute)
	if got := c.Now(); !got.Equal(time.Unix(1_900_000_060, 0)) {
		t.Fatalf("after Add(1m): %v", got)
	}
}

func TestFakeConcurrentAddsAllCount(t *testing.T) {
	start := time.Unix(1_000, 0)
	c := NewFake(start)
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() { defer wg.Done(); c.Add(time.Second) }()
	}
	wg.Wait()
	if got := c.Now().Sub(start); got != 100*time.Second {
		t.Fatalf("100 concurrent Add(1s) moved the clock by %v", got)
	}
}
