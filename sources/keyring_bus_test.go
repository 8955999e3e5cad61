package sources

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/ipc"
)

// The keyring's session-bus tests run the real Keyring (go-keyring and godbus, no fake backend)
// in a child process, since the bus address is per process. No Secret Service is involved: they
// check what happens before one would be asked.
const (
	busChildEnv  = "BLAUTH_KEYRING_BUS_CHILD"  // the scenario the child runs
	busMarkerEnv = "BLAUTH_KEYRING_BUS_MARKER" // inherited by anything the child starts
	tripwireEnv  = "BLAUTH_TRIPWIRE_LOG"
)

// busProcesses are the programs a session-bus autolaunch leaves running.
var busProcesses = []string{"dbus-daemon", "dbus-launch", "gnome-keyring-daemon"}

// processesWith returns the pids of the bus processes whose environment holds marker (those the
// child, or something it started, launched), and how many bus processes run in all.
func processesWith(t *testing.T, marker string) (marked []int, total int) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		bus := false
		for _, p := range busProcesses {
			bus = bus || strings.HasPrefix(p, name) // comm is cut at 15 bytes
		}
		if !bus {
			continue
		}
		total++
		env, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if strings.Contains(string(env), busMarkerEnv+"="+marker) {
			marked = append(marked, pid)
		}
	}
	return marked, total
}

// runBusChild runs scenario in a child process without a session-bus address, with xdgRuntime
// as XDG_RUNTIME_DIR and a dbus-launch first on PATH that only records that it was run. It
// checks that the child passed, that dbus-launch was never run and that no bus process carrying
// the child's marker is left.
func runBusChild(t *testing.T, scenario, xdgRuntime string) {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	marker := hex.EncodeToString(b[:])
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	must(t, os.Mkdir(bin, 0o700))
	tripLog := filepath.Join(dir, "tripwire.log")
	must(t, os.WriteFile(filepath.Join(bin, "dbus-launch"), []byte("#!/bin/sh\necho \"dbus-launch $*\" >> \"$"+tripwireEnv+"\"\nexit 1\n"), 0o700))

	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "PATH", "DISPLAY":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, busChildEnv+"="+scenario, busMarkerEnv+"="+marker, tripwireEnv+"="+tripLog,
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if xdgRuntime != "" {
		env = append(env, "XDG_RUNTIME_DIR="+xdgRuntime)
	}

	_, totalBefore := processesWith(t, marker)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKeyringSessionBus", "-test.v", "-test.count=1")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	t.Logf("child (%s):\n%s", scenario, out)

	marked, totalAfter := processesWith(t, marker)
	t.Logf("bus processes on the machine: %d before, %d after (others' included); started by the child: %d", totalBefore, totalAfter, len(marked))
	for _, pid := range marked {
		// Started by this test's child: ours to stop.
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if len(marked) != 0 {
		t.Errorf("the child left %d bus processes running (pids %v)", len(marked), marked)
	}
	if trip, err := os.ReadFile(tripLog); err == nil {
		t.Errorf("dbus-launch was run: %s", trip)
	}
	if err != nil || !strings.Contains(string(out), "bus child checks passed") {
		t.Fatalf("child: %v", err)
	}
}

// TestKeyringSessionBusAbsent: with no DBUS_SESSION_BUS_ADDRESS and no $XDG_RUNTIME_DIR/bus,
// every keyring call fails at once with ErrKeyringUnavailable, saying why, and nothing (no
// dbus-launch, no dbus-daemon, no gnome-keyring-daemon) is started.
func TestKeyringSessionBusAbsent(t *testing.T) {
	if os.Getenv(busChildEnv) == "absent" {
		busAbsentChild(t)
		return
	}
	if os.Getenv(busChildEnv) != "" {
		return
	}
	t.Run("no XDG_RUNTIME_DIR", func(t *testing.T) { runBusChild(t, "absent", "") })
	t.Run("empty XDG_RUNTIME_DIR", func(t *testing.T) { runBusChild(t, "absent", t.TempDir()) })
	t.Run("bus is not a socket", func(t *testing.T) {
		dir := t.TempDir()
		must(t, os.WriteFile(filepath.Join(dir, "bus"), nil, 0o600))
		runBusChild(t, "absent", dir)
	})
}

func busAbsentChild(t *testing.T) {
	k := &Keyring{Timeout: 2 * time.Second}
	ctx := context.Background()
	const want = "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set and $XDG_RUNTIME_DIR/bus does not exist)"
	calls := map[string]func() error{
		"Probe":  func() error { return k.Probe(ctx) },
		"Get":    func() error { _, err := k.Get(ctx, "acme"); return err },
		"Set":    func() error { return k.Set(ctx, "acme", KeyringSecret{Kind: ipc.KindAPIKey, Value: "bl_FAKE"}) },
		"Delete": func() error { return k.Delete(ctx, "acme") },
		"List":   func() error { _, err := k.List(ctx); return err },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, ErrKeyringUnavailable) || !errors.Is(err, ErrNoSessionBus) || !strings.Contains(fmtErr(err), want) {
			t.Errorf("%s: %v; want ErrKeyringUnavailable saying %q", name, err, want)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s waited for its time box instead of failing at once: %v", name, err)
		}
	}
	if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" {
		t.Errorf("DBUS_SESSION_BUS_ADDRESS became %q", a)
	}
	if !t.Failed() {
		t.Log("bus child checks passed")
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestKeyringSessionBusFromRuntimeDir: with no DBUS_SESSION_BUS_ADDRESS but a socket at
// $XDG_RUNTIME_DIR/bus, the keyring uses that bus: the address is set for the process before
// the first call. The bus is a real, private dbus-daemon without a Secret Service (and without
// service activation), so the call reaches the bus and fails there, at once.
func TestKeyringSessionBusFromRuntimeDir(t *testing.T) {
	if os.Getenv(busChildEnv) == "runtime-dir" {
		busRuntimeDirChild(t)
		return
	}
	if os.Getenv(busChildEnv) != "" {
		return
	}
	dir := shortTempDir(t)
	pid, busMarker := startPrivateBus(t, filepath.Join(dir, "bus"))
	// The process check below can fail: it finds the bus this test started.
	if marked, _ := processesWith(t, busMarker); len(marked) != 1 || marked[0] != pid {
		t.Fatalf("the bus-process check found %v, want the private bus (pid %d)", marked, pid)
	}
	runBusChild(t, "runtime-dir", dir)
}

func busRuntimeDirChild(t *testing.T) {
	k := &Keyring{Timeout: 10 * time.Second}
	err := k.Probe(context.Background())
	if !errors.Is(err, ErrKeyringUnavailable) || errors.Is(err, ErrNoSessionBus) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Probe on a bus without a Secret Service: %v; want the bus's own refusal", err)
	}
	if !strings.Contains(fmtErr(err), "org.freedesktop.secrets") {
		t.Errorf("Probe: %v; want the bus saying that no Secret Service is there", err)
	}
	want := "unix:path=" + filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "bus")
	if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != want {
		t.Errorf("DBUS_SESSION_BUS_ADDRESS = %q, want %q", a, want)
	}
	if !t.Failed() {
		t.Log("bus child checks passed")
	}
}

// startPrivateBus runs a dbus-daemon listening on socket, with no service activation, until the
// test ends. It returns its pid and the marker in its environment.
func startPrivateBus(t *testing.T, socket string) (pid int, marker string) {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dbus-daemon not found (apt-get install dbus): %v", err)
		}
		t.Skipf("dbus-daemon not found (apt-get install dbus): %v", err)
	}
	conf := filepath.Join(filepath.Dir(socket), "bus.conf")
	must(t, os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=`+socket+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`), 0o600))
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	marker = hex.EncodeToString(b[:])
	cmd := exec.Command(daemon, "--nofork", "--nopidfile", "--config-file="+conf)
	cmd.Env = append(os.Environ(), busMarkerEnv+"="+marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if fi, err := os.Stat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return cmd.Process.Pid, marker
		}
		if time.Now().After(deadline) {
			t.Fatalf("dbus-daemon did not listen on %s within 30s", socket)
		}
	}
}

func shortTempDir(t *testing.T) string { return testkit.ShortTempDir(t, "bk") }

func TestBusAddressEscaping(t *testing.T) {
	for in, want := range map[string]string{
		"/run/user/1000/bus":     "/run/user/1000/bus",
		"/tmp/a b/bus":           "/tmp/a%20b/bus",
		"/tmp/x,y=z;w%/bus":      "/tmp/x%2cy%3dz%3bw%25/bus",
		"/tmp/\u00e9t\u00e9/bus": "/tmp/%c3%a9t%c3%a9/bus",
	} {
		if got := escapeBusAddressValue(in); got != want {
			t.Errorf("escapeBusAddressValue(%q) = %q, want %q", in, got, want)
		}
	}
}
