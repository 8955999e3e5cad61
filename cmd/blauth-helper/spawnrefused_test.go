package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A daemon the helper starts reads blauth's config file and BLAUTH_NO_KEYRING, where no flag
// reaches it; a mistake there stops it at once, and the helper tells what it said, not only
// that no daemon answers. Once the mistake is fixed, the next command starts one as usual: the
// refusal already in the log is not told again.
func TestSpawnedDaemonRefusingItsSettingsIsNamed(t *testing.T) {
	dir := shortTempDir(t)
	socket := filepath.Join(dir, "run", "blauthd.sock")
	cfg := filepath.Join(dir, "config", "blauth", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("keyrnig: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := headlessEnv(t, socket, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	for _, tt := range []struct {
		env  []string
		want string
	}{
		{env, cfg + ` line 1: unknown key "keyrnig" (did you mean "keyring"?)`},
		{headlessEnv(t, socket, "BLAUTH_NO_KEYRING=please"), `BLAUTH_NO_KEYRING="please": want 1 (no keyring) or 0`},
	} {
		r := runProc(t, proc{env: tt.env}, helperBin(), "token", "acme")
		mustFail(t, r, exitUnreachable)
		if !strings.HasPrefix(r.stderr, "blauth: error: daemon unreachable: the blauthd started for this command (pid ") || !strings.Contains(r.stderr, tt.want) ||
			!strings.Contains(r.stderr, "blauth: hint: fix what it names") || !strings.Contains(r.stderr, filepath.Join(dir, "run", "blauthd.log")) {
			t.Errorf("stderr %q; want the daemon's own error, %q, and its log named", r.stderr, tt.want)
		}
	}
	if r := runProc(t, proc{env: append(env[:len(env):len(env)], "BLAUTH_NO_SPAWN=1")}, helperBin(), "ping"); r.code != exitUnreachable {
		t.Errorf("a daemon runs after it refused its settings: %s", r)
	}

	if err := os.WriteFile(cfg, []byte("keyring: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pid, st := startSpawned(t, env)
	t.Cleanup(func() { stopSpawned(t, pid, socket) })
	if st.code != 0 || !strings.Contains(st.stdout, "OS keyring: off: keyring: false in "+cfg) || strings.Contains(st.stderr, "refused") {
		t.Errorf("status after the fix: %s", st)
	}
}
