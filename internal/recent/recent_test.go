package recent

import (
	"strconv"
	"sync"
	"testing"
)

func TestCacheKeepsTheLastValues(t *testing.T) {
	var c Cache[int, *string]
	made := 0
	mk := func(k int) *string { made++; s := strconv.Itoa(k); return &s }
	first := c.Get(1, mk)
	if again := c.Get(1, mk); again != first || made != 1 {
		t.Fatalf("the same key made a new value (%d made)", made)
	}
	for k := 2; k <= Size; k++ {
		c.Get(k, mk)
	}
	if c.Get(1, mk) != first || made != Size {
		t.Fatalf("key 1 was dropped with %d keys kept (%d made)", Size, made)
	}
	c.Get(Size+1, mk) // replaces the oldest slot
	if v := c.Get(1, mk); *v != "1" {
		t.Fatalf("key 1 gave %q", *v)
	}
}

func TestCacheConcurrent(t *testing.T) {
	var c Cache[int, string]
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				k := (i + g) % (2 * Size)
				if v := c.Get(k, strconv.Itoa); v != strconv.Itoa(k) {
					t.Errorf("key %d gave %q", k, v)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestStoreReplacesTheValueOfItsKey(t *testing.T) {
	var c Cache[string, int]
	c.Store("a", 1)
	c.Store("b", 2)
	c.Store("a", 3)
	if v, ok := c.Load("a"); !ok || v != 3 {
		t.Fatalf("Load(a) = %d, %v; want 3", v, ok)
	}
	for i := range Size - 2 { // a and b take two slots: a third value of a would have taken a third
		c.Store(strconv.Itoa(i), i)
	}
	if v, ok := c.Load("b"); !ok || v != 2 {
		t.Fatalf("b was dropped though only %d keys were stored: %d, %v", Size, v, ok)
	}
}
