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
	saved := inOwnUserNamespace
	defer func() { inOwnUserNamespace = saved }()
	inOwnUserNamespace = func() bool { return true }
	if m := peerRefusal(65534, 1000); !strings.Contains(m, "not mapped in the user namespace this daemon runs in") || !strings.Contains(m, "--user 1000:") {
		t.Errorf("65534 seen by a confined daemon: %q", m)
	}
	inOwnUserNamespace = func() bool { return false }
	if m := peerRefusal(65534, 1000); m != "the peer runs as uid 65534; this daemon serves only uid 1000" {
		t.Errorf("65534 seen from the initial namespace (the real nobody): %q", m)
	}
	if m := peerRefusal(1001, 1000); !strings.Contains(m, "uid 1001") || !strings.Contains(m, "only uid 1000") {
		t.Errorf("another user: %q", m)
	}
}
