package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/ipc"
)

// headlessEnv is a machine without a desktop session, as servers, CI, containers and WSL are:
// no D-Bus session bus address and no XDG_RUNTIME_DIR, so no $XDG_RUNTIME_DIR/bus either. The
// helper starts the daemon itself (no BLAUTH_NO_SPAWN).
func headlessEnv(t *testing.T, socket string, more ...string) []string {
	return append([]string{ipc.SocketEnv + "=" + socket}, more...)
}

// spawnedLog is the log of the daemon the helper started on socket.
func spawnedLog(socket string) string {
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(socket), "blauthd.log"))
	return string(b)
}

// startSpawned makes the helper start a daemon (with a ping that may not start one, then a
// status that does) and returns its pid, for the test's cleanup to stop.
func startSpawned(t *testing.T, env []string) (pid int, status result) {
	t.Helper()
	status = runProc(t, proc{env: env}, helperBin(), "status")
	return pingDaemon(t, env), status
}

// Without a session bus the keyring is off, and that is said once, at start, in one log line,
// and in status: not in the errors and hints of every command.
func TestHeadlessSaysKeyringOffOnce(t *testing.T) {
	socket := filepath.Join(shortTempDir(t), "run", "blauthd.sock")
	env := headlessEnv(t, socket)
	pid, st := startSpawned(t, env)
	t.Cleanup(func() { stopSpawned(t, pid, socket) })
	mustCode(t, st, 0)
	if !strings.Contains(st.stdout, "OS keyring: off: no D-Bus session bus") {
		t.Errorf("status does not say that the keyring is off and why:\n%s", st.stdout)
	}
	if strings.Contains(st.stdout, "could not be used") {
		t.Errorf("status lists the keyring as a broken source:\n%s", st.stdout)
	}
	for _, args := range [][]string{{"token"}, {"token", "acme"}, {"header", "acme"}, {"env", "acme"}} {
		r := runProc(t, proc{env: env}, helperBin(), args...)
		mustFail(t, r, exitNoCreds)
		for _, word := range []string{"keyring", "D-Bus", "Secret Service", "fix the source"} {
			if strings.Contains(r.stderr, word) {
				t.Errorf("%v on a headless machine mentions %q:\n%s", args, word, r.stderr)
			}
		}
	}
	log := spawnedLog(socket)
	if n := strings.Count(log, "no D-Bus session bus"); n != 1 || !strings.Contains(log, "OS keyring off") {
		t.Errorf("the daemon's log says the keyring is off %d times, want once at start:\n%s", n, log)
	}
}

// login --api-key asks the daemon whether it can keep the secret before it reads one: on a
// machine without a keyring it fails at once (exit 7) and leaves standard input alone.
func TestLoginAsksForTheKeyringFirst(t *testing.T) {
	socket := filepath.Join(shortTempDir(t), "run", "blauthd.sock")
	env := headlessEnv(t, socket)
	pid, _ := startSpawned(t, env)
	t.Cleanup(func() { stopSpawned(t, pid, socket) })
	for _, flag := range []string{"--api-key", "--client-credentials"} {
		// Standard input is a pipe nobody writes to or closes: a helper that read it first
		// would wait for ever (the context below ends it, and the test fails).
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, helperBin(), "login", "acme", flag)
		cmd.Env = append(baseEnv(t), env...)
		cmd.Stdin = r
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.WaitDelay = time.Second
		runErr := cmd.Run()
		timedOut := ctx.Err() != nil
		cancel()
		r.Close()
		w.Close()
		if timedOut {
			t.Fatalf("login acme %s read standard input before asking whether the keyring is on", flag)
		}
		if cmd.ProcessState.ExitCode() != exitKeyring || !strings.Contains(stderr.String(), "OS keyring is off in this blauthd: no D-Bus session bus") ||
			!strings.Contains(stderr.String(), "nothing was read from standard input") || !strings.Contains(stderr.String(), "blauth: hint: ") {
			t.Errorf("login acme %s: %v, stderr %q; want exit 7 saying why, and a hint", flag, runErr, stderr.String())
		}
	}
}

// BLAUTH_NO_KEYRING=1 and keyring: false in blauth's config file reach a daemon the helper
// starts, where no flag does.
func TestSpawnedDaemonReadsKeyringSettings(t *testing.T) {
	t.Run("BLAUTH_NO_KEYRING", func(t *testing.T) {
		socket := filepath.Join(shortTempDir(t), "run", "blauthd.sock")
		env := headlessEnv(t, socket, "BLAUTH_NO_KEYRING=1")
		pid, st := startSpawned(t, env)
		t.Cleanup(func() { stopSpawned(t, pid, socket) })
		if !strings.Contains(st.stdout, "OS keyring: off: BLAUTH_NO_KEYRING=1 is set") {
			t.Errorf("status:\n%s\nlog:\n%s", st.stdout, spawnedLog(socket))
		}
	})
	t.Run("config file", func(t *testing.T) {
		dir := shortTempDir(t)
		socket := filepath.Join(dir, "run", "blauthd.sock")
		cfg := filepath.Join(dir, "config", "blauth", "config.yaml")
		if err := os.MkdirAll(filepath.Dir(cfg), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg, []byte("# no desktop session here\nkeyring: false\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env := headlessEnv(t, socket, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
		pid, st := startSpawned(t, env)
		t.Cleanup(func() { stopSpawned(t, pid, socket) })
		if !strings.Contains(st.stdout, "OS keyring: off: keyring: false in "+cfg) {
			t.Errorf("status:\n%s\nlog:\n%s", st.stdout, spawnedLog(socket))
		}
	})
}

// A session bus without a Secret Service (a server's systemd user session, a container with a
// bus) is as good as none for the keyring: the daemon says so once, and no answer repeats it.
func TestBusWithoutSecretServiceIsKeyringOff(t *testing.T) {
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dbus-daemon not found (apt-get install dbus): %v", err)
		}
		t.Skipf("dbus-daemon not found (apt-get install dbus): %v", err)
	}
	dir := shortTempDir(t)
	bus := filepath.Join(dir, "bus")
	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=`+bus+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon, "--nofork", "--nopidfile", "--config-file="+conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	testkit.WaitFor(t, 30*time.Second, "dbus-daemon's socket", func() bool {
		fi, err := os.Stat(bus)
		return err == nil && fi.Mode()&os.ModeSocket != 0
	})

	socket := filepath.Join(dir, "run", "blauthd.sock")
	env := headlessEnv(t, socket, "DBUS_SESSION_BUS_ADDRESS=unix:path="+bus)
	pid, st := startSpawned(t, env)
	t.Cleanup(func() { stopSpawned(t, pid, socket) })
	if !strings.Contains(st.stdout, "OS keyring: off: no Secret Service on the D-Bus session bus") || strings.Contains(st.stdout, "could not be used") {
		t.Errorf("status:\n%s\nlog:\n%s", st.stdout, spawnedLog(socket))
	}
	r := runProc(t, proc{env: env}, helperBin(), "token", "acme")
	mustFail(t, r, exitNoCreds)
	if strings.Contains(r.stderr, "keyring") || strings.Contains(r.stderr, "secrets") {
		t.Errorf("token acme mentions the keyring:\n%s", r.stderr)
	}
}
