package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/ipc"
)

// A daemon that systemd's socket starts gets the unit's flags and the user manager's
// environment, none of the user's flags: BLAUTH_NO_KEYRING and blauth's config file still reach
// it. It runs here under the real systemd-socket-activate, which passes on only HOME, PATH, TERM,
// USER and the variables named with -E, as a user manager passes its own environment.
func TestSocketActivatedDaemonReadsKeyringSettings(t *testing.T) {
	ssa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-socket-activate is not installed: run .ci/install-deps.sh")
		}
		t.Skip("systemd-socket-activate is not installed (.ci/install-deps.sh installs it)")
	}
	dir := shortTempDir(t)
	cfg := filepath.Join(dir, "config", "blauth", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("keyring: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, pass, want string
	}{
		{"environment", "BLAUTH_NO_KEYRING=1", "OS keyring: off: BLAUTH_NO_KEYRING=1 is set"},
		{"config file", "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "OS keyring: off: keyring: false in " + cfg},
	} {
		t.Run(tt.name, func(t *testing.T) {
			run := filepath.Join(shortTempDir(t), "run")
			if err := os.Mkdir(run, 0o700); err != nil {
				t.Fatal(err)
			}
			socket := filepath.Join(run, "blauthd.sock")
			cmd := exec.Command(ssa, "-l", socket, "-E", tt.pass, daemonBin(), "--socket", socket, "--log-format", "json")
			cmd.Env = baseEnv(t)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				// systemd-socket-activate became blauthd on the first connection: stop that.
				_ = cmd.Process.Signal(syscall.SIGTERM)
				_ = cmd.Wait()
			})
			testkit.WaitFor(t, 30*time.Second, "systemd-socket-activate's socket", func() bool {
				fi, err := os.Stat(socket)
				return err == nil && fi.Mode()&os.ModeSocket != 0
			})
			st := runProc(t, proc{env: []string{ipc.SocketEnv + "=" + socket, "BLAUTH_NO_SPAWN=1"}}, helperBin(), "status")
			if st.code != 0 || !strings.Contains(st.stdout, "(systemd)\n") || !strings.Contains(st.stdout, tt.want+"\n") {
				t.Errorf("status of the socket-activated daemon: %s; want %q", st, tt.want)
			}
		})
	}
}
