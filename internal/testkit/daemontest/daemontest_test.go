package daemontest

import (
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// Stopped on a daemon that still runs reports false and leaves Stopped and Stop usable: it used
// to reset a sync.Once from inside its Do, which the runtime ends with a fatal error.
func TestStoppedOnARunningDaemonCanBeAskedAgain(t *testing.T) {
	td := Start(t, Options{})
	if td.Stopped(20 * time.Millisecond) {
		t.Fatal("Stopped reported a running daemon as stopped")
	}
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionStop); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !td.Stopped(30 * time.Second) {
		t.Fatal("the daemon still runs 30s after stop")
	}
	if !td.Stopped(0) {
		t.Fatal("Stopped forgot that the daemon had stopped")
	}
	if err := td.Stop(); err != nil {
		t.Fatalf("Stop after the daemon stopped by itself: %v", err)
	}
}
