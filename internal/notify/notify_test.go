package notify

import (
	"sync"
	"testing"
	"time"
)

func TestNotifyWakesEveryWaiterOnce(t *testing.T) {
	var b Broadcast
	const n = 100
	var woke sync.WaitGroup
	woke.Add(n)
	for i := 0; i < n; i++ {
		ch := b.Wait()
		go func() { <-ch; woke.Done() }()
	}
	b.Notify()
	done := make(chan struct{})
	go func() { woke.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("not every waiter woke")
	}
	select {
	case <-b.Wait():
		t.Fatal("a new wait is woken by an old notify")
	default:
	}
}

func TestNotifyWithoutWaitersNeverBlocks(t *testing.T) {
	var b Broadcast
	for i := 0; i < 1000; i++ {
		b.Notify()
	}
	ch := b.Wait()
	b.Notify()
	b.Notify()
	select {
	case <-ch:
	default:
		t.Fatal("the channel taken before Notify is still open")
	}
}
