//go:build systemd

package systemde2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

// The cases run in this order and share one container; each sets up what it relies on.

const socketPath = runtime1 + "/blauth/blauthd.sock"

// enableSocket runs the command that the package tells users to run (idempotent).
func (h *harness) enableSocket(t *testing.T) {
	t.Helper()
	h.user(t, "systemctl", "--user", "daemon-reload")
	h.user(t, "systemctl", "--user", "enable", "--now", "blauthd.socket")
}

func (h *harness) mainPID(t *testing.T) int {
	t.Helper()
	pid, _ := strconv.Atoi(h.show(t, "blauthd.service", "MainPID")["MainPID"])
	return pid
}

// waitRunning waits until blauthd.service is active with a main process other than notPID.
func (h *harness) waitRunning(t *testing.T, notPID int, timeout time.Duration) int {
	t.Helper()
	var pid int
	ok := waitFor(timeout, func() bool {
		p := h.show(t, "blauthd.service", "ActiveState", "MainPID")
		pid, _ = strconv.Atoi(p["MainPID"])
		return p["ActiveState"] == "active" && pid != 0 && pid != notPID
	})
	if !ok {
		h.fatalf(t, "blauthd.service is not active with a new main process (old %d) within %s", notPID, timeout)
	}
	return pid
}

// helperToken runs `blauth-helper token WS` as the user; env lines (secrets) go on stdin.
func (h *harness) helperToken(t *testing.T, ws string, env ...string) string {
	t.Helper()
	argv := []string{"blauth-helper", "token"}
	if ws != "" {
		argv = append(argv, ws)
	}
	out, errOut, err := h.userRun(time.Minute, envLines(env...), withEnv(argv...)...)
	if err != nil {
		h.fatalf(t, "blauth-helper token %s: %v\n%s", ws, err, errOut)
	}
	return strings.TrimSpace(out)
}

// jwtSubject reads the sub claim of a JWT, or "" when tok is not one.
func jwtSubject(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return ""
	}
	return claims.Sub
}

func randomSecret(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return fmt.Sprintf("%s%x", prefix, b)
}

// loginAPIKey saves a new random API key (prefix, then random hex) for workspace ws with
// `blauth-helper login ws --api-key` as the user, the key read from stdin, and returns it. The
// key is remembered as a secret no log may hold.
func (h *harness) loginAPIKey(t *testing.T, prefix, ws string) string {
	t.Helper()
	key := randomSecret(prefix)
	h.remember(key)
	if _, errOut, err := h.userRun(30*time.Second, key+"\n", "blauth-helper", "login", ws, "--api-key"); err != nil {
		h.fatalf(t, "saving the key: blauth-helper login %s --api-key: %v\n%s", ws, err, errOut)
	}
	return key
}

// journalEntries reads `journalctl --user -u blauthd.service -o json` as the user.
func (h *harness) journalEntries(t *testing.T, extra ...string) []map[string]any {
	t.Helper()
	argv := append([]string{"journalctl", "--user", "-u", "blauthd.service", "-o", "json", "--no-pager"}, extra...)
	out := h.user(t, argv...)
	var entries []map[string]any
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("journalctl -o json printed a line that is not JSON: %v\n%s", err, line)
		}
		entries = append(entries, e)
	}
	return entries
}

func str(e map[string]any, k string) string {
	s, _ := e[k].(string)
	return s
}

// TestSocketActivation: the socket enabled by the command the package prints; nothing runs until
// the first connection, which starts the service; the service becomes active through READY=1.
func TestSocketActivation(t *testing.T) {
	h := need(t)
	if got := h.show(t, "blauthd.service", "ActiveState")["ActiveState"]; got != "inactive" {
		t.Fatalf("blauthd.service is %s right after dpkg -i; the package must start nothing", got)
	}
	h.enableSocket(t)
	if got := strings.TrimSpace(h.user(t, "systemctl", "--user", "is-enabled", "blauthd.socket")); got != "enabled" {
		t.Errorf("blauthd.socket is %q after enable, want enabled", got)
	}
	sock := h.show(t, "blauthd.socket", "ActiveState", "SubState")
	if sock["ActiveState"] != "active" || sock["SubState"] != "listening" {
		h.fatalf(t, "blauthd.socket is %s/%s, want active/listening", sock["ActiveState"], sock["SubState"])
	}
	if got := h.show(t, "blauthd.service", "ActiveState")["ActiveState"]; got != "inactive" {
		t.Errorf("blauthd.service is %s before any connection; socket activation should leave it inactive", got)
	}
	perms := h.user(t, "stat", "-c", "%a %U %F", runtime1+"/blauth", socketPath)
	if want := "700 dev directory\n600 dev socket\n"; perms != want {
		t.Errorf("socket directory and socket are\n%swant\n%s", perms, want)
	}

	key := randomSecret("bl_e2e_first_")
	h.remember(key)
	start := time.Now()
	got := h.helperToken(t, "", "BL_WORKSPACE=ws-first", "BL_API_KEY="+key)
	if got != key {
		h.fatalf(t, "the first connection was answered %q, want the caller's API key", got)
	}
	t.Logf("first connection answered in %s, daemon started by it", time.Since(start).Round(time.Millisecond))

	p := h.show(t, "blauthd.service", "ActiveState", "SubState", "Type", "NotifyAccess", "MainPID", "NRestarts", "Result")
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["Type"] != "notify" || p["NotifyAccess"] != "main" {
		h.fatalf(t, "after the first connection blauthd.service is %v; want active/running, Type=notify, NotifyAccess=main", p)
	}
	// With Type=notify the manager logs "Started" only once READY=1 arrived, which blauthd sends
	// after it logged "blauthd serving": the order of the two entries shows which one made the
	// unit active (with Type=simple, "Started" would come first).
	var serving, started = -1, -1
	for i, e := range h.journalEntries(t) {
		if serving < 0 && str(e, "SYSLOG_IDENTIFIER") == "blauthd" && strings.Contains(str(e, "MESSAGE"), "blauthd serving") {
			serving = i
		}
		if started < 0 && str(e, "MESSAGE_ID") == "39f53479d3a045ac8e11786248231fbf" { // unit started
			started = i
		}
	}
	if serving < 0 || started < 0 || started < serving {
		h.fatalf(t, "journal order: \"blauthd serving\" at %d, the manager's \"Started\" at %d; want serving first (READY=1)", serving, started)
	}
}

// TestLoginsWhenBlaxelDirIsCreatedLater: ~/.blaxel does not exist when the daemon starts; a
// device login through blauth-helper saves the session there, and a bl login made after the
// start is refreshed and written back.
func TestLoginsWhenBlaxelDirIsCreatedLater(t *testing.T) {
	h := need(t)
	h.enableSocket(t)
	restartWithoutBlaxelDir := func(t *testing.T) {
		h.user(t, "systemctl", "--user", "stop", "blauthd.service")
		h.user(t, "rm", "-rf", home+"/.blaxel")
		if _, _, err := h.userRun(10*time.Second, "", "test", "-e", home+"/.blaxel"); err == nil {
			t.Fatal("~/.blaxel still exists")
		}
		h.user(t, "blauth-helper", "status") // the first connection starts the daemon
	}

	t.Run("device login through blauth-helper login", func(t *testing.T) {
		restartWithoutBlaxelDir(t)
		wait, lines := h.background(2*time.Minute, "", "blauth-helper", "login", "ws-device")
		codeRE := regexp.MustCompile(`shows the code: ([0-9A-F]{4}-[0-9A-F]{4})`)
		var code string
		timeout := time.After(30 * time.Second)
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				if m := codeRE.FindStringSubmatch(l); m != nil {
					code = m[1]
					break read
				}
			case <-timeout:
				break read
			}
		}
		if code == "" {
			_, errOut, err := wait()
			h.fatalf(t, "blauth-helper login printed no user code: %v\n%s", err, errOut)
		}
		if !h.api.ApproveDevice(code, true) {
			t.Fatalf("the fake API knows no device login with code %s", code)
		}
		_, errOut, err := wait()
		if err != nil {
			h.fatalf(t, "blauth-helper login ws-device failed after approval: %v\n%s", err, errOut)
		}
		cfg := h.user(t, "cat", home+"/.blaxel/config.yaml")
		if !strings.Contains(cfg, "name: ws-device") || !strings.Contains(cfg, "refresh_token: ") {
			t.Fatalf("~/.blaxel/config.yaml does not hold the ws-device session:\n%s", cfg)
		}
		h.rememberConfig(cfg)
		if perms := h.user(t, "stat", "-c", "%a", home+"/.blaxel", home+"/.blaxel/config.yaml"); perms != "700\n600\n" {
			t.Errorf("~/.blaxel and config.yaml have modes %q, want 700 and 600", perms)
		}
		tok := h.helperToken(t, "ws-device")
		h.remember(tok)
		if jwtSubject(tok) != "user" {
			t.Errorf("the token served for ws-device is not the session's (sub %q)", jwtSubject(tok))
		}
	})

	t.Run("write-back of a bl login made after the start", func(t *testing.T) {
		restartWithoutBlaxelDir(t)
		// What bl login leaves: a session whose access token is about to expire, so that the
		// daemon must refresh it (rotating the refresh token) and write the new one back.
		_, refresh := h.api.NewSession("user", "dc-e2e-writeback")
		access := h.api.TokenExpiring("user", time.Now().Add(15*time.Second), 2*time.Hour)
		h.remember(refresh, access, "dc-e2e-writeback")
		cfg := fmt.Sprintf(`context:
  workspace: ws-bl
workspaces:
- name: ws-bl
  credentials:
    access_token: %s
    refresh_token: %s
    expires_in: 7200
    device_code: dc-e2e-writeback
tracking: false
`, access, refresh)
		if out, err := h.userShell(20*time.Second, `umask 077; mkdir -p ~/.blaxel && cat > ~/.blaxel/config.yaml`, cfg); err != nil {
			t.Fatalf("writing the bl config: %v\n%s", err, out)
		}
		refreshes := h.api.Count("refresh_token")
		// The daemon sees the new file through its watcher, a moment after it is written (on a
		// loaded machine, more than the time the next command takes to start): wait for it.
		if !waitFor(15*time.Second, func() bool {
			out, _, _ := h.userRun(10*time.Second, "", "blauth-helper", "status")
			return strings.Contains(out, "ws-bl")
		}) {
			h.fatalf(t, "blauthd never saw the bl config written after its start")
		}
		tok := h.helperToken(t, "ws-bl")
		h.remember(tok)
		if tok == access || jwtSubject(tok) != "user" {
			h.fatalf(t, "the daemon served the expiring access token or a foreign one (sub %q); want a refreshed token", jwtSubject(tok))
		}
		if h.api.Count("refresh_token") <= refreshes {
			t.Fatalf("the daemon did not refresh the session")
		}
		var after string
		written := waitFor(15*time.Second, func() bool {
			after, _, _ = h.userRun(10*time.Second, "", "cat", home+"/.blaxel/config.yaml")
			return !strings.Contains(after, refresh) && strings.Contains(after, "refresh_token: ")
		})
		h.rememberConfig(after)
		if !written {
			h.fatalf(t, "~/.blaxel/config.yaml still holds the spent refresh token: the rotated one was not written back\n%s", after)
		}
		if !strings.Contains(after, "name: ws-bl") {
			t.Errorf("the written-back config lost the workspace:\n%s", after)
		}
	})
}

// rememberConfig adds every credential value of a bl config to the secrets.
func (h *harness) rememberConfig(cfg string) {
	re := regexp.MustCompile(`(?m)^\s*(access_token|refresh_token|device_code|apiKey|client_credentials):\s*"?([^"\s]+)"?\s*$`)
	for _, m := range re.FindAllStringSubmatch(cfg, -1) {
		h.remember(m[2])
	}
}

// TestReloadRereadsSources: the keyring is the one source that is not watched; a secret saved
// there by another blauthd reaches the unit's daemon on `systemctl --user reload`, without a
// restart.
func TestReloadRereadsSources(t *testing.T) {
	h := need(t)
	h.enableSocket(t)
	h.user(t, "blauth-helper", "status")
	pid := h.mainPID(t)

	// A second daemon, as the user, on a socket of its own, saves a secret in the shared keyring.
	other := "/tmp/e2e-other/blauthd.sock" // the user's /tmp, not the unit's private one
	h.user(t, "mkdir", "-p", "-m", "0700", "/tmp/e2e-other")
	wait, _ := h.background(2*time.Minute, "", "sh", "-c", `echo $$ > /tmp/e2e-other/pid; exec blauthd --socket `+other+` --log-format json 2>/tmp/e2e-other/log`)
	defer func() {
		h.userShell(20*time.Second, `kill -TERM "$(cat /tmp/e2e-other/pid)"`, "")
		if _, _, err := wait(); err != nil {
			t.Logf("the second daemon exited: %v", err)
		}
		h.userShell(20*time.Second, `rm -rf /tmp/e2e-other`, "")
	}()
	if !waitFor(20*time.Second, func() bool {
		_, _, err := h.userRun(10*time.Second, "", "test", "-S", other)
		return err == nil
	}) {
		log, _ := h.userShell(10*time.Second, "cat /tmp/e2e-other/log", "")
		t.Fatalf("the second blauthd did not create %s:\n%s", other, log)
	}
	key := randomSecret("bl_e2e_reload_")
	h.remember(key)
	if _, errOut, err := h.userRun(30*time.Second, key+"\n", "env", "BLAUTH_SOCKET="+other, "blauth-helper", "login", "ws-reload", "--api-key"); err != nil {
		t.Fatalf("saving a key through the second daemon: %v\n%s", err, errOut)
	}

	// The unit's daemon has not seen it yet…
	if out, errOut, err := h.userRun(30*time.Second, "", "blauth-helper", "token", "ws-reload"); err == nil {
		t.Fatalf("the unit's daemon served ws-reload before any reload (%q): the keyring is watched after all, and this case proves nothing", strings.TrimSpace(out))
	} else if !strings.Contains(errOut, "ws-reload") {
		t.Logf("before reload: %s", errOut)
	}
	// …until it is reloaded.
	h.user(t, "systemctl", "--user", "reload", "blauthd.service")
	if got := h.mainPID(t); got != pid {
		t.Errorf("reload replaced the main process (%d → %d); it should re-read in place", pid, got)
	}
	if tok := h.helperToken(t, "ws-reload"); tok != key {
		h.fatalf(t, "after reload ws-reload is served %q, want the key saved in the keyring", tok)
	}
	reloaded := false
	for _, e := range h.journalEntries(t, "_PID="+strconv.Itoa(pid)) {
		if strings.HasPrefix(str(e, "MESSAGE"), "reloading sources") {
			reloaded = true
		}
	}
	if !reloaded {
		h.errorf(t, "the daemon's journal has no \"reloading sources\" entry")
	}
}

// TestKeyringLoginSurvivesRestart: a key saved with blauth-helper login goes to the user's
// gnome-keyring over their session bus and is served again by the next daemon process.
func TestKeyringLoginSurvivesRestart(t *testing.T) {
	h := need(t)
	h.enableSocket(t)
	key := h.loginAPIKey(t, "bl_e2e_keyring_", "ws-keyring")
	if tok := h.helperToken(t, "ws-keyring"); tok != key {
		h.fatalf(t, "ws-keyring is served %q, want the saved key", tok)
	}
	// secret-tool prints the attributes on stderr, the secrets on stdout (not shown).
	_, attrs, err := h.userRun(30*time.Second, "", "secret-tool", "search", "--all", "service", "blauth")
	if err != nil || !strings.Contains(attrs, "attribute.username = ws-keyring") {
		t.Errorf("secret-tool does not list the ws-keyring item in the user's keyring (%v):\n%s", err, attrs)
	}
	pid := h.mainPID(t)
	h.user(t, "systemctl", "--user", "restart", "blauthd.service")
	newPID := h.waitRunning(t, pid, 30*time.Second)
	if tok := h.helperToken(t, "ws-keyring"); tok != key {
		h.fatalf(t, "after the restart (pid %d → %d) ws-keyring is served %q, want the saved key", pid, newPID, tok)
	}
	status := h.user(t, "blauth-helper", "status", "--json")
	if !strings.Contains(status, `"ws-keyring"`) || !strings.Contains(status, "keyring") {
		t.Errorf("status does not show ws-keyring served from the keyring:\n%s", status)
	}
}

// TestStopFinishesRequestsInFlight: `systemctl --user stop` while a token exchange is held up
// at the API: the caller still gets its token, and the daemon exits cleanly.
func TestStopFinishesRequestsInFlight(t *testing.T) {
	h := need(t)
	h.enableSocket(t)
	h.user(t, "blauth-helper", "status")
	creds := h.api.AddClient("e2e-sa", randomSecret("sa-secret-"))
	h.remember(creds)
	if raw, err := base64.StdEncoding.DecodeString(creds); err == nil {
		_, secret, _ := strings.Cut(string(raw), ":")
		h.remember(secret)
	}
	h.api.SetHang(4 * time.Second)
	h.api.SetFault(blaxeltest.FaultHang, 1)
	defer h.api.SetFault(blaxeltest.FaultNone, 0)
	before := h.api.Count("client_credentials")
	wait, _ := h.background(time.Minute, envLines("BL_WORKSPACE=ws-sa", "BL_CLIENT_CREDENTIALS="+creds), withEnv("blauth-helper", "token")...)
	if !waitFor(20*time.Second, func() bool { return h.api.Count("client_credentials") > before }) {
		wait()
		h.fatalf(t, "the token exchange never reached the API")
	}
	t0 := time.Now()
	h.user(t, "systemctl", "--user", "stop", "blauthd.service")
	stopTook := time.Since(t0)
	out, errOut, err := wait()
	if err != nil {
		h.fatalf(t, "the request in flight failed when the daemon was stopped: %v\n%s", err, errOut)
	}
	tok := strings.TrimSpace(out)
	h.remember(tok)
	if jwtSubject(tok) != "sa:e2e-sa" {
		t.Errorf("the request in flight was answered %q, not the service account's token", tok)
	}
	p := h.show(t, "blauthd.service", "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainStatus"] != "0" {
		h.errorf(t, "after stop blauthd.service is %v; want inactive, Result=success, exit status 0", p)
	}
	t.Logf("stop returned after %s, once the exchange held up for 4 s had finished", stopTook.Round(time.Millisecond))
	if stopTook < time.Second {
		t.Errorf("stop returned after %s, before the held-up exchange could finish", stopTook)
	}
}

// TestKillAndHangAreRestarted: a daemon killed with SIGKILL is restarted by Restart=, one stopped
// with SIGSTOP by the watchdog, and a client that connects while it hangs is queued on the socket
// and answered by the next daemon.
func TestKillAndHangAreRestarted(t *testing.T) {
	h := need(t)
	h.enableSocket(t)
	key := h.loginAPIKey(t, "bl_e2e_restart_", "ws-restart")
	p := h.show(t, "blauthd.service", "MainPID", "NRestarts", "WatchdogUSec", "RestartUSec")
	pid, _ := strconv.Atoi(p["MainPID"])
	restarts, _ := strconv.Atoi(p["NRestarts"])
	t.Logf("WatchdogSec=%s RestartSec=%s", p["WatchdogUSec"], p["RestartUSec"])

	t.Run("SIGKILL", func(t *testing.T) {
		h.root(t, "kill", "-KILL", strconv.Itoa(pid))
		// No client connects: only Restart= can bring it back.
		newPID := h.waitRunning(t, pid, 20*time.Second)
		if n, _ := strconv.Atoi(h.show(t, "blauthd.service", "NRestarts")["NRestarts"]); n != restarts+1 {
			h.errorf(t, "NRestarts is %d after SIGKILL, want %d", n, restarts+1)
		}
		restarts++
		pid = newPID
		if tok := h.helperToken(t, "ws-restart"); tok != key {
			h.fatalf(t, "after the restart ws-restart is served %q", tok)
		}
		// Again, with a client connecting at once, while the manager waits RestartSec=: the
		// socket stays open and the client is answered by whichever start comes first.
		h.root(t, "kill", "-KILL", strconv.Itoa(pid))
		out, errOut, err := h.userRun(time.Minute, "", "/opt/e2e/e2eclient", "get", "-workspace", "ws-restart", "-timeout", "30s")
		if err != nil || strings.TrimSpace(out) != key {
			h.fatalf(t, "a client connecting right after SIGKILL was not answered with the key: %v\n%s", err, errOut)
		}
		pid = h.waitRunning(t, pid, 20*time.Second)
		restarts, _ = strconv.Atoi(h.show(t, "blauthd.service", "NRestarts")["NRestarts"])
	})

	t.Run("SIGSTOP and the watchdog", func(t *testing.T) {
		h.root(t, "kill", "-STOP", strconv.Itoa(pid))
		t0 := time.Now()
		// A client connects to the hung daemon's socket and waits (blauth-helper gives up after
		// 10 s; e2eclient waits as long as the watchdog may need).
		wait, _ := h.background(2*time.Minute, "", "/opt/e2e/e2eclient", "get", "-workspace", "ws-restart", "-timeout", "90s")
		newPID := h.waitRunning(t, pid, 75*time.Second)
		took := time.Since(t0)
		out, errOut, err := wait()
		if err != nil {
			h.fatalf(t, "the client queued while the daemon hung was not answered: %v\n%s", err, errOut)
		}
		if strings.TrimSpace(out) != key {
			t.Errorf("the queued client got %q, want the key", strings.TrimSpace(out))
		}
		t.Logf("hung daemon %d replaced by %d after %s", pid, newPID, took.Round(time.Second))
		if took > 45*time.Second {
			t.Errorf("the hung daemon was replaced after %s; WatchdogSec=30s plus RestartSec=2s should do it sooner", took)
		}
		if n, _ := strconv.Atoi(h.show(t, "blauthd.service", "NRestarts")["NRestarts"]); n != restarts+1 {
			h.errorf(t, "NRestarts is %d after the watchdog, want %d", n, restarts+1)
		}
		if _, err := h.docker(10*time.Second, "exec", h.container, "kill", "-0", strconv.Itoa(pid)); err == nil {
			t.Errorf("the hung process %d is still there", pid)
		}
		// The manager's own account (the Go runtime's goroutine dump on SIGABRT comes between).
		var watchdog bool
		for _, e := range h.journalEntries(t) {
			if strings.Contains(str(e, "MESSAGE"), "Failed with result 'watchdog'") {
				watchdog = true
			}
		}
		if !watchdog {
			h.errorf(t, "the manager did not log that blauthd.service failed with result 'watchdog'")
		}
	})
}

// TestSecurityExposureAndLimitsUnderLoad: systemd-analyze security on the running unit, then the
// load run inside the container, after which the daemon is still the same process, never
// restarted, never OOM-killed, under MemoryMax= and TasksMax=.
func TestSecurityExposureAndLimitsUnderLoad(t *testing.T) {
	h := need(t)
	h.enableSocket(t)
	h.loginAPIKey(t, "bl_e2e_load_", "ws-load")

	out, errOut, err := h.userRun(time.Minute, "", "systemd-analyze", "security", "--user", "blauthd.service", "--no-pager")
	if err != nil && !strings.Contains(out, "Overall exposure level") {
		h.fatalf(t, "systemd-analyze security --user: %v\n%s%s", err, out, errOut)
	}
	m := regexp.MustCompile(`Overall exposure level for blauthd.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("systemd-analyze security --user blauthd.service (running unit): %.1f", score)
	if score > 3.0 {
		t.Errorf("exposure %.1f is above 3.0:\n%s", score, out)
	}

	before := h.show(t, "blauthd.service", "MainPID", "NRestarts")
	out, errOut, err = h.userRun(3*time.Minute, "", "/opt/e2e/e2eclient", "load", "-workspace", "ws-load",
		"-idle", "500", "-workers", "32", "-requests", "20000", "-max", "60s", "-timeout", "20s")
	if err != nil {
		h.fatalf(t, "the load run failed: %v\n%s\n%s", err, out, errOut)
	}
	var sum struct {
		OK, Failed int64
		Idle       int
		Seconds    float64
		P99Milli   float64 `json:"p99_ms"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &sum); err != nil {
		t.Fatalf("load summary: %v: %s", err, out)
	}
	t.Logf("load: %d requests answered, %d failed, %d idle connections held, %.1fs, p99 %.1f ms", sum.OK, sum.Failed, sum.Idle, sum.Seconds, sum.P99Milli)
	if sum.OK < 20000 || sum.Idle != 500 {
		t.Errorf("the load run made %d requests with %d idle connections; want 20000 (plus 10 on idle ones) and 500", sum.OK, sum.Idle)
	}

	after := h.show(t, "blauthd.service", "MainPID", "NRestarts", "ActiveState", "Result",
		"MemoryCurrent", "MemoryMax", "TasksCurrent", "TasksMax", "ControlGroup")
	if after["MainPID"] != before["MainPID"] || after["NRestarts"] != before["NRestarts"] || after["ActiveState"] != "active" || after["Result"] != "success" {
		h.fatalf(t, "under load the daemon was replaced or failed: before %v, after %v", before, after)
	}
	memMax, _ := strconv.ParseInt(after["MemoryMax"], 10, 64)
	tasksMax, _ := strconv.ParseInt(after["TasksMax"], 10, 64)
	if memMax != 128<<20 || tasksMax != 64 {
		t.Fatalf("MemoryMax=%s TasksMax=%s, want 128M and 64", after["MemoryMax"], after["TasksMax"])
	}
	// What the kernel can tell about the process itself, wherever the limits are enforced.
	status := h.root(t, "cat", "/proc/"+after["MainPID"]+"/status")
	hwm, threads := procField(status, "VmHWM:")*1024, procField(status, "Threads:")
	t.Logf("daemon after the load: peak RSS %.1f MiB, %d threads", float64(hwm)/(1<<20), threads)
	if hwm <= 0 || hwm >= memMax || threads <= 0 || threads >= tasksMax {
		t.Errorf("peak RSS %d bytes and %d threads; want under MemoryMax %d and TasksMax %d", hwm, threads, memMax, tasksMax)
	}
	cur, err := strconv.ParseInt(after["MemoryCurrent"], 10, 64)
	if err != nil {
		// cgroup v1 (this host): the user manager gets no memory or pids controller, so the limits
		// are set on the unit but not enforced. Say so; the process figures above still hold.
		t.Logf("MemoryCurrent=%s TasksCurrent=%s: the user manager has no memory/pids accounting on this host's cgroup setup; MemoryMax= and TasksMax= are not enforced here",
			after["MemoryCurrent"], after["TasksCurrent"])
		return
	}
	tasks, _ := strconv.ParseInt(after["TasksCurrent"], 10, 64)
	t.Logf("cgroup: MemoryCurrent %.1f MiB, TasksCurrent %d", float64(cur)/(1<<20), tasks)
	if cur >= memMax || tasks >= tasksMax {
		t.Errorf("MemoryCurrent %d / TasksCurrent %d reached MemoryMax %d / TasksMax %d", cur, tasks, memMax, tasksMax)
	}
	cg := "/sys/fs/cgroup" + after["ControlGroup"]
	if events, err := h.docker(10*time.Second, "exec", h.container, "cat", cg+"/memory.events"); err == nil {
		if procField(events, "oom_kill") != 0 || procField(events, "max") != 0 {
			t.Errorf("memory.events shows the limit was hit:\n%s", events)
		}
	}
	if events, err := h.docker(10*time.Second, "exec", h.container, "cat", cg+"/pids.events"); err == nil {
		if procField(events, "max") != 0 {
			t.Errorf("pids.events shows TasksMax was hit:\n%s", events)
		}
	}
}

// procField reads "Name: 123 kB" style lines.
func procField(text, name string) int64 {
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && (f[0] == name || f[0] == name+":") {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return -1
}

// TestUpgradeWhileServing: dpkg -i of a newer package while the daemon serves a client in a loop:
// no request fails, the socket is never torn down, and the running daemon is replaced by the new
// version (the package restarts running user instances; docs/OPERATIONS.md says why).
func TestUpgradeWhileServing(t *testing.T) {
	h := need(t)
	h.enableSocket(t)
	key := h.loginAPIKey(t, "bl_e2e_upgrade_", "ws-upgrade")
	if !strings.Contains(h.user(t, "blauth-helper", "status"), "blauthd "+version1) {
		t.Fatalf("the running daemon is not %s", version1)
	}
	pid := h.mainPID(t)
	socketSince := h.show(t, "blauthd.socket", "ActiveEnterTimestampMonotonic")["ActiveEnterTimestampMonotonic"]

	h.user(t, "rm", "-f", "/tmp/e2e-stop-loop")
	wait, _ := h.background(4*time.Minute, "", "/opt/e2e/e2eclient", "loop", "-workspace", "ws-upgrade",
		"-until", "/tmp/e2e-stop-loop", "-max", "3m", "-every", "20ms", "-timeout", "30s")
	time.Sleep(time.Second)
	dpkg := h.root(t, "dpkg", "-i", h.debs[version2])
	time.Sleep(2 * time.Second)
	h.user(t, "touch", "/tmp/e2e-stop-loop")
	out, errOut, err := wait()
	var sum struct {
		OK, Failed int64
		Errors     []string
		MaxMilli   float64 `json:"max_ms"`
	}
	_ = json.Unmarshal([]byte(strings.TrimSpace(out)), &sum)
	t.Logf("clients during the upgrade: %d answered, %d failed, slowest %.0f ms", sum.OK, sum.Failed, sum.MaxMilli)
	if err != nil || sum.Failed != 0 || sum.OK == 0 {
		h.fatalf(t, "requests failed during the upgrade: %v %s %s\ndpkg -i:\n%s", err, out, errOut, dpkg)
	}
	if got := h.show(t, "blauthd.socket", "ActiveEnterTimestampMonotonic")["ActiveEnterTimestampMonotonic"]; got != socketSince {
		t.Errorf("the socket unit was restarted by the upgrade (active since %s, before %s)", got, socketSince)
	}
	if !strings.Contains(dpkg, "restarted the running daemon of: "+user) {
		t.Errorf("dpkg -i did not say it restarted the running daemon:\n%s", dpkg)
	}
	newPID := h.waitRunning(t, pid, 30*time.Second)
	status := h.user(t, "blauth-helper", "status")
	if !strings.Contains(status, "blauthd "+version2) {
		h.fatalf(t, "after the upgrade the daemon (pid %d → %d) is not %s:\n%s\ndpkg -i:\n%s", pid, newPID, version2, status, dpkg)
	}
	if tok := h.helperToken(t, "ws-upgrade"); tok != key {
		t.Errorf("after the upgrade ws-upgrade is served %q", tok)
	}
}

// TestZZJournalStructuredAndNoSecret runs last: the daemon's journal entries carry structured
// fields, and no entry in the whole journal holds any secret the run used or was served.
func TestZZJournalStructuredAndNoSecret(t *testing.T) {
	h := need(t)
	entries := h.journalEntries(t)
	var daemonEntries int
	var serving, withWorkspace map[string]any
	for _, e := range entries {
		if str(e, "SYSLOG_IDENTIFIER") != "blauthd" {
			continue
		}
		daemonEntries++
		if serving == nil && strings.HasPrefix(str(e, "MESSAGE"), "blauthd serving") {
			serving = e
		}
		if withWorkspace == nil && str(e, "WORKSPACE") != "" {
			withWorkspace = e
		}
	}
	if daemonEntries == 0 {
		h.fatalf(t, "journalctl --user -u blauthd holds no entry from blauthd")
	}
	if serving == nil {
		h.fatalf(t, "no \"blauthd serving\" entry")
	}
	for _, f := range []string{"SOCKET", "VERSION", "PID", "PRIORITY"} {
		if str(serving, f) == "" {
			t.Errorf("the \"blauthd serving\" entry has no %s field: %v", f, serving)
		}
	}
	if str(serving, "SOCKET") != socketPath || str(serving, "PRIORITY") != "6" {
		t.Errorf("the \"blauthd serving\" entry: SOCKET=%q PRIORITY=%q, want %s and 6", str(serving, "SOCKET"), str(serving, "PRIORITY"), socketPath)
	}
	if withWorkspace == nil {
		t.Errorf("no daemon entry carries a WORKSPACE field")
	} else {
		t.Logf("an entry with fields: %s", compact(withWorkspace))
	}

	// Every secret, in every field of every entry of the container's journal (system and user).
	all := h.root(t, "journalctl", "-o", "json", "--no-pager")
	userAll := h.user(t, "journalctl", "--user", "-o", "json", "--no-pager")
	secrets := h.allSecrets()
	if len(secrets) < 5 {
		t.Fatalf("only %d secrets were recorded; the earlier cases did not run", len(secrets))
	}
	for _, s := range secrets {
		for _, journal := range []string{all, userAll} {
			for _, line := range strings.Split(journal, "\n") {
				if !strings.Contains(line, s) {
					continue
				}
				var e map[string]any
				_ = json.Unmarshal([]byte(line), &e)
				var fields []string
				for k, v := range e {
					if x, ok := v.(string); ok && strings.Contains(x, s) {
						fields = append(fields, k)
					}
				}
				t.Errorf("a journal entry holds a secret (%d characters, starting %q) in %v; unit %q%q, identifier %q",
					len(s), s[:min(6, len(s))], fields, str(e, "_SYSTEMD_UNIT"), str(e, "_SYSTEMD_USER_UNIT"), str(e, "SYSLOG_IDENTIFIER"))
			}
		}
	}
	t.Logf("%d journal lines checked for %d secrets", strings.Count(all, "\n")+strings.Count(userAll, "\n"), len(secrets))
}

func compact(e map[string]any) string {
	var b strings.Builder
	for _, k := range []string{"PRIORITY", "MESSAGE", "WORKSPACE", "COMPONENT", "SOURCE", "KIND", "ERROR"} {
		if v := str(e, k); v != "" {
			fmt.Fprintf(&b, "%s=%q ", k, v)
		}
	}
	return b.String()
}
