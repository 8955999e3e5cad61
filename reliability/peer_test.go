//go:build reliability

package reliability

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

var asNobody = []string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}

// TestReliabilityOtherUser: another uid is refused by the peer check even when the socket's
// file mode lets it connect; a socket directory that is not private is refused at start.
func TestReliabilityOtherUser(t *testing.T) {
	const ws = "peer-ws"
	api, d := serviceAccountDaemon(t, ws, time.Hour)
	d.mustServe(t, api, ws, time.Minute, "")
	work := shortDir(t)
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}

	// As created: nobody cannot even reach the socket.
	r := runHelper(t, d.socket, work, nil, asNobody, helperBin, "token", ws)
	if r.code == 0 || r.stdout != "" {
		t.Fatalf("nobody got a token through the private socket: exit %d, stdout %q", r.code, r.stdout)
	}
	t.Logf("FIGURE other uid, socket as created: exit %d: %s", r.code, firstLine(r.stderr))

	// Opened up after start: the directory chain 0755, the socket 0666. Now nobody connects, and
	// only the daemon's SO_PEERCRED check stands in the way.
	runDir := filepath.Dir(d.socket)
	for _, p := range []string{filepath.Dir(runDir), runDir} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(d.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	r = runHelper(t, d.socket, work, nil, asNobody, helperBin, "token", ws)
	if r.code == 0 {
		t.Fatalf("nobody got exit 0 from the helper through an opened-up socket; stdout %q", r.stdout)
	}
	if strings.TrimSpace(r.stdout) != "" {
		t.Fatalf("nobody got output %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "blauth: error:") {
		t.Errorf("the helper's refusal is not a clear error: %q", r.stderr)
	}
	if !waitFor(5*time.Second, 50*time.Millisecond, func() bool {
		return d.logHas(`"peer_uid":65534`, "refused a connection from another user")
	}) {
		t.Errorf("the daemon did not log its refusal of uid 65534")
	}
	t.Logf("FIGURE other uid, socket opened up: exit %d: %s", r.code, firstLine(r.stderr))

	// A client that writes its request only after the daemon has refused it and closed must
	// still learn why: code=forbidden, not a broken pipe (which is what a quick helper sees
	// whenever the refusal wins the race with its write).
	t.Run("refusal reaches a client that writes late", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "setpriv", append(asNobody[1:], selfBin)...)
		cmd.Env = []string{slowGetChildEnv + "=" + d.socket}
		cmd.Dir = "/"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("slow client as nobody: %v\n%s", err, out)
		}
		recordHelperStderr(string(out))
		t.Logf("FIGURE other uid, late writer: %s", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "; "))
		if !strings.Contains(string(out), "code: "+ipc.CodeForbidden+"\n") {
			t.Errorf("the refusal's code=%s is lost to a client that writes after the daemon answered: it got %q", ipc.CodeForbidden, strings.TrimSpace(string(out)))
		}
	})

	// The owner is still served.
	d.mustServe(t, api, ws, time.Minute, "")
	d.stop()

	t.Run("unsafe socket directory refused at start", func(t *testing.T) {
		cases := []struct {
			name  string
			mode  os.FileMode
			owner int // -1: keep root
			want  string
		}{
			{"owned by nobody", 0o700, nobodyUID, "is owned by uid 65534"},
			{"mode 0755", 0o755, -1, "has mode 0755"},
			{"mode 0710", 0o710, -1, "has mode 0710"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				base := shortDir(t)
				dir := filepath.Join(base, "run")
				if err := os.Mkdir(dir, tc.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, tc.mode); err != nil {
					t.Fatal(err)
				}
				if tc.owner >= 0 {
					if err := os.Chown(dir, tc.owner, tc.owner); err != nil {
						t.Fatal(err)
					}
				}
				sock := filepath.Join(dir, "blauthd.sock")
				bad := startDaemon(t, daemonOpts{api: api, socket: sock, noWait: true})
				code, err := bad.waitExit(10 * time.Second)
				if err != nil {
					t.Fatalf("blauthd started on an unsafe directory: %v", err)
				}
				if code == 0 {
					t.Fatal("blauthd exited 0 on an unsafe directory")
				}
				if !bad.logHas("unsafe socket directory", dir, tc.want) {
					t.Fatalf("exit %d, but no clear message naming %s and %q:\n%s", code, dir, tc.want, tail(bad.logPath, 5))
				}
				if _, err := os.Lstat(sock); err == nil {
					t.Errorf("a socket was created in the unsafe directory")
				}
				t.Logf("FIGURE unsafe dir %s: exit %d: %s", tc.name, code, lastError(bad.logPath))
			})
		}
	})
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// lastError returns the "error" field of the log's last line, roughly.
func lastError(path string) string {
	l := tail(path, 1)
	if i := strings.Index(l, `"error":"`); i >= 0 {
		l = l[i+9:]
		if j := strings.Index(l, `"`); j >= 0 {
			return l[:j]
		}
	}
	return l
}
