package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

var pingPID = regexp.MustCompile(`^blauthd \S+ \(pid (\d+)\) on (\S+)\n$`)

// pingDaemon runs the built helper's ping, never starting a daemon, and returns the pid of the
// daemon that answered, or 0.
func pingDaemon(t *testing.T, env []string) int {
	t.Helper()
	r := runProc(t, proc{env: append(env, "BLAUTH_NO_SPAWN=1")}, helperBin(), "ping")
	m := pingPID.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Errorf("ping: %s", r)
		return 0
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// stopSpawned ends a daemon the helper started, by its pid, and waits until it is gone or a zombie
// (it is not our child: init reaps it).
func stopSpawned(t *testing.T, pid int, socket string) {
	if pid <= 1 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			if _, err := os.Stat(socket); err == nil {
				t.Errorf("the daemon left its socket %s behind", socket)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	t.Errorf("spawned daemon %d did not stop on SIGTERM within 30s", pid)
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// pid (comm) STATE …: Z is a zombie, X dead.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// With no daemon and spawning allowed, the helper starts one in the background, waits for it,
// and later calls reuse it. The daemon does not keep the first caller's credentials.
func TestSpawnOnDemand(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"BLAUTH_DAEMON", []string{"BLAUTH_DAEMON=" + daemonBin()}},
		{"beside the helper", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortTempDir(t)
			// The socket's directory does not exist yet: the helper creates it 0700.
			socket := filepath.Join(dir, "run", "blauthd.sock")
			env := append([]string{ipc.SocketEnv + "=" + socket}, tc.env...)
			pid := 0
			t.Cleanup(func() {
				stopSpawned(t, pid, socket)
				if t.Failed() {
					log, _ := os.ReadFile(filepath.Join(dir, "run", "blauthd.log"))
					t.Logf("blauthd.log:\n%s", log)
				}
			})

			// The first call finds no daemon, starts one and gets its answer from it.
			r := runProc(t, proc{env: append(env, "BL_WORKSPACE=acme", "BL_API_KEY=shell-key")}, helperBin(), "token")
			pid = pingDaemon(t, env) // whatever happened, find the daemon to stop it
			mustCode(t, r, 0)
			if r.stdout != "shell-key\n" {
				t.Fatalf("token through a spawned daemon: %s", r)
			}
			fi, err := os.Stat(filepath.Dir(socket))
			if err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("socket directory: want mode 0700, got %v, %v", fi.Mode(), err)
			}

			// Later calls reuse it.
			if again := pingDaemon(t, env); again != pid {
				t.Errorf("a second call started another daemon: pid %d, then %d", pid, again)
			}
			r = runProc(t, proc{env: append(env, "BL_WORKSPACE=acme", "BL_API_KEY=shell-key")}, helperBin(), "header")
			if r.code != 0 || !strings.HasPrefix(r.stdout, "X-Blaxel-Authorization: Bearer shell-key\n") {
				t.Errorf("header through the spawned daemon: %s", r)
			}

			// The daemon did not inherit the spawning shell's BL_API_KEY nor BL_WORKSPACE: a
			// caller without them gets nothing.
			r = runProc(t, proc{env: append(env, "BL_WORKSPACE=acme")}, helperBin(), "token")
			mustFail(t, r, exitNoCreds)
			if !strings.Contains(r.stderr, "no credentials") {
				t.Errorf("want no credentials, got %s", r)
			}
			r = runProc(t, proc{env: env}, helperBin(), "token")
			mustFail(t, r, exitNoCreds)
			if !strings.Contains(r.stderr, "no workspace") {
				t.Errorf("want no workspace, got %s", r)
			}
			if again := pingDaemon(t, env); again != pid {
				t.Errorf("the daemon changed: pid %d, then %d", pid, again)
			}
		})
	}
}

// BLAUTH_NO_SPAWN=1 never starts a daemon, even when one is at hand.
func TestNoSpawn(t *testing.T) {
	dir := shortTempDir(t)
	socket := filepath.Join(dir, "run", "blauthd.sock")
	r := runProc(t, proc{env: []string{ipc.SocketEnv + "=" + socket, "BLAUTH_NO_SPAWN=1", "BLAUTH_DAEMON=" + daemonBin(), "BL_WORKSPACE=acme", "BL_API_KEY=k"}}, helperBin(), "token")
	mustFail(t, r, exitUnreachable)
	if _, err := os.Stat(filepath.Dir(socket)); err == nil {
		t.Error("BLAUTH_NO_SPAWN=1, yet the helper prepared a daemon's directory")
	}
}

// A daemon that cannot be started is reported as unreachable, with where to look.
func TestSpawnFails(t *testing.T) {
	dir := shortTempDir(t)
	socket := filepath.Join(dir, "run", "blauthd.sock")
	r := runProc(t, proc{env: []string{ipc.SocketEnv + "=" + socket, "BLAUTH_DAEMON=" + filepath.Join(dir, "no-such-blauthd"), "BL_WORKSPACE=acme", "BL_API_KEY=k"}}, helperBin(), "token")
	mustFail(t, r, exitUnreachable)
}

// The call that starts a daemon says so, once, with what a user needs to find and stop it; ping
// never starts one; stop stops it.
func TestSpawnIsVisibleAndReversible(t *testing.T) {
	dir := shortTempDir(t)
	socket := filepath.Join(dir, "run", "blauthd.sock")
	env := []string{ipc.SocketEnv + "=" + socket}
	pid := 0
	t.Cleanup(func() { stopSpawned(t, pid, socket) })

	r := runProc(t, proc{env: env}, helperBin(), "ping")
	mustFail(t, r, exitUnreachable)
	if _, err := os.Stat(filepath.Dir(socket)); err == nil {
		t.Fatal("ping prepared a daemon's directory: it must never start one")
	}

	r = runProc(t, proc{env: append(env, "BL_WORKSPACE=acme", "BL_API_KEY=k")}, helperBin(), "token")
	pid = pingDaemon(t, env)
	mustCode(t, r, 0)
	want := fmt.Sprintf("blauth: started blauthd (pid %d) on %s; it logs to %s; stop it with 'blauth-helper stop'\n",
		pid, socket, filepath.Join(dir, "run", "blauthd.log"))
	if r.stderr != want {
		t.Fatalf("the first call's stderr:\n got %q\nwant %q", r.stderr, want)
	}
	r = runProc(t, proc{env: append(env, "BL_WORKSPACE=acme", "BL_API_KEY=k")}, helperBin(), "token")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("a later call: %s, want silence on stderr", r)
	}

	r = runProc(t, proc{env: env}, helperBin(), "stop")
	mustCode(t, r, 0)
	if r.stderr != fmt.Sprintf("blauth: stopped blauthd (pid %d); it will not start again until a command needs it (the next 'blauth-helper token', or socket activation); watches and clients wait for it\n", pid) {
		t.Fatalf("stop said %q", r.stderr)
	}
	if alive(pid) {
		t.Fatalf("blauthd (pid %d) still runs after stop", pid)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatalf("the socket is still there after stop: %v", err)
	}
	r = runProc(t, proc{env: env}, helperBin(), "stop")
	if r.code != 0 || !strings.Contains(r.stderr, "nothing to stop") {
		t.Fatalf("stop with no daemon: %s", r)
	}
}
