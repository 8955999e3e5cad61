//go:build remote

package remotee2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// TestUnmappedPeerIsNamed65534 runs blauthd in a user namespace of its own that maps only its
// own uid (4242), exactly what systemd's PrivateUsers=yes gives the packaged user unit, and
// what a daemon in a rootless or user-namespaced container has. A peer whose uid has no mapping
// there, here root on the host (which passes the file modes), is seen by SO_PEERCRED as 65534,
// the overflow uid: the daemon refuses it and says so. The daemon's own user is served.
//
// Docker could not produce this here: --userns-remap is an engine-wide setting that needs
// subordinate id ranges in /etc/subuid and /etc/subgid, which the test does not write.
func TestUnmappedPeerIsNamed65534(t *testing.T) {
	needRoot(t)
	needCommands(t, "util-linux", "setpriv")
	api, cc, secret := fakeAPI(t, 2*time.Hour, "acme")
	base := newDir(t, "userns", 0o755)
	runtimeDir, home := filepath.Join(base, "run"), filepath.Join(base, "home")
	mkdirs(t, 0o700, otherUID, runtimeDir, home)
	fwd := filepath.Join(runtimeDir, "blauth-fwd", ipc.SocketName)
	d := startDaemon(t, daemonOpts{
		uid: otherUID, ownUserNamespace: true,
		socket: filepath.Join(runtimeDir, "blauth", ipc.SocketName), home: home, sockets: []string{fwd},
		args: []string{"--scoped-socket", fwd + "=acme"},
		env:  []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc, "BL_API_URL=" + api.Base},
	})
	// The daemon really is in a namespace of its own with one uid mapped.
	uidMap, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(d.cmd.Process.Pid), "uid_map"))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(uidMap)); len(f) != 3 || f[0] != strconv.Itoa(otherUID) || f[1] != strconv.Itoa(otherUID) || f[2] != "1" {
		t.Fatalf("the daemon's uid_map is %q, want only %d mapped to itself", uidMap, otherUID)
	}

	r := helperAs(otherUID, fwd, "token")
	tok := strings.TrimSpace(r.stdout)
	if r.code != 0 || !apiAccepts(t, api, tok, "acme") {
		t.Fatalf("the daemon's own user: %s", r)
	}
	for _, socket := range []string{fwd, filepath.Join(runtimeDir, "blauth", ipc.SocketName)} {
		r = helperAs(0, socket, "token")
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "not mapped in the user namespace this daemon runs in") {
			t.Errorf("root, unmapped in the daemon's namespace, on %s: %s", filepath.Base(filepath.Dir(socket)), r)
		}
	}
	d.stop(t)
	if !strings.Contains(d.log.String(), `"peer_uid":65534`) {
		t.Errorf("the daemon did not log the refused peer as uid 65534")
	}
	noSecrets(t, "blauthd's log", d.log.String(), cc, secret, tok)
}
