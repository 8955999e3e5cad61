package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Two daemons starting together: the second finds the lock held, and names its holder.
func TestSecondLockNamesItsHolder(t *testing.T) {
	dir, err := os.MkdirTemp("", "bsl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "x.sock")
	lock, err := lockSocketDir(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.release()
	if _, err := lockSocketDir(sock); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("as pid %d", os.Getpid())) {
		t.Fatalf("second lock: %v, want the holder's pid named", err)
	}
}

func TestPeerRefusalSaysWhereThePeerComesFrom(t *testing.T) {
	if m := peerRefusal(65534, 1000); !strings.Contains(m, "overflow uid") || !strings.Contains(m, "--user") {
		t.Errorf("65534: %q", m)
	}
	if m := peerRefusal(1001, 1000); !strings.Contains(m, "uid 1001") || !strings.Contains(m, "only uid 1000") {
		t.Errorf("another user: %q", m)
	}
}
