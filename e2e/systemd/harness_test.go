//go:build systemd

// Package systemde2e proves blauth's packaged user units under a real systemd user manager: a
// Debian root file system made with debootstrap, imported into a private Docker engine, booted
// with systemd as PID 1, a lingering user "dev" whose user manager runs the units that the
// project's own .deb installed with dpkg -i. Tests run as root on the host and drive the
// container with docker exec; docs/OPERATIONS.md says what each case proves.
//
//	make test-systemd      # or: go test -tags systemd -count=1 -v ./e2e/systemd/
//
// It needs root, dockerd and the docker client (apt-get install docker.io) and debootstrap, and
// reaches the Debian mirror named in the machine's apt sources. Where CI=true and any of that
// is missing, every test fails; elsewhere they are skipped with the reason.
package systemde2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
)

// Versions of the two packages built for the run; dpkg sorts "~e2e1" before "~e2e2".
const (
	version1 = "0.0.0~e2e1"
	version2 = "0.0.0~e2e2"
	user     = "dev"
	uid      = 1000
	runtime1 = "/run/user/1000"
	home     = "/home/dev"
	// keyringPassword unlocks the user's login keyring in the container.
	keyringPassword = "e2e-keyring-password-7f3a"
)

// h is the harness that TestMain set up; setupErr says why it could not be.
var (
	h        *harness
	setupErr error
	skip     string
)

type harness struct {
	repo        string // the repository's root
	dir         string // everything the run makes on the host
	dockerDir   string
	dockerEnv   []string
	image       string
	base        string
	container   string
	containerID string
	api         *blaxeltest.Server
	debs        map[string]string // version → path inside the container

	mu      sync.Mutex
	secrets []string // every secret the run used or saw, for the journal check
	timings []string
}

// remember adds secrets that must never appear in any log.
func (h *harness) remember(s ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range s {
		if x != "" {
			h.secrets = append(h.secrets, x)
		}
	}
}

func (h *harness) allSecrets() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.secrets...)
}

func TestMain(m *testing.M) {
	start := time.Now()
	skip = missing()
	if skip != "" && os.Getenv("CI") == "true" {
		setupErr = fmt.Errorf("cannot run under CI=true: %s", skip)
		skip = ""
	}
	before := ourProcesses("")
	if skip == "" && setupErr == nil {
		h, setupErr = setUp()
	}
	setupTime := time.Since(start)
	code := m.Run()
	if h != nil {
		h.tearDown()
		left := ourProcesses(h.dir)
		if len(left) > 0 {
			fmt.Fprintf(os.Stderr, "e2e/systemd: FAIL: processes left after tear-down: %v\n", left)
			code = 1
		} else {
			fmt.Fprintf(os.Stderr, "e2e/systemd: processes of the suite's engines and containers: %d before the run, none left after it\n", len(before))
		}
		for _, t := range h.timings {
			fmt.Fprintln(os.Stderr, "e2e/systemd: time:", t)
		}
	}
	fmt.Fprintf(os.Stderr, "e2e/systemd: set-up %s, whole run %s\n", setupTime.Round(time.Second), time.Since(start).Round(time.Second))
	os.Exit(code)
}

// need returns the harness, or ends the test: skipped where the suite cannot run outside CI,
// failed when it should have run.
func need(t *testing.T) *harness {
	t.Helper()
	if skip != "" {
		t.Skipf("e2e/systemd cannot run here: %s (CI=true turns this into a failure)", skip)
	}
	if setupErr != nil {
		first, _, _ := strings.Cut(setupErr.Error(), "\n")
		t.Fatalf("the systemd harness could not be set up (the whole error is printed before the tests): %s", first)
	}
	return h
}

// missing names what this machine lacks for the suite, or returns "".
func missing() string {
	if runtime.GOOS != "linux" {
		return "not Linux"
	}
	if os.Geteuid() != 0 {
		return "not root (dockerd, debootstrap and chroot need it)"
	}
	for _, c := range []string{"dockerd", "docker", "debootstrap", "dpkg", "tar", "mount"} {
		if _, err := exec.LookPath(c); err != nil {
			return c + " is not installed (run .ci/install-deps.sh)"
		}
	}
	return ""
}

// ourProcesses lists processes whose command line names dir (the engine, its containerd and
// shims) or that run in the suite's container (their cgroup names it); with dir "" it lists
// the engines of any run of the suite, earlier ones included.
func ourProcesses(dir string) []string {
	if dir == "" {
		dir = "/tmp/blauth-e2e-sd."
	}
	var container []string
	if h != nil && h.container != "" {
		container = []string{h.containerID}
	}
	return e2etest.ProcsNaming(dir, container...)
}

// step runs one set-up step and records its time.
func (h *harness) step(name string, f func() error) error {
	t0 := time.Now()
	err := f()
	h.mu.Lock()
	h.timings = append(h.timings, fmt.Sprintf("%-44s %6.1fs", name, time.Since(t0).Seconds()))
	h.mu.Unlock()
	fmt.Fprintf(os.Stderr, "e2e/systemd: %s: %.1fs\n", name, time.Since(t0).Seconds())
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func setUp() (hh *harness, err error) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		return nil, err
	}
	// A short path: the engine's sockets live under it.
	dir, err := os.MkdirTemp("/tmp", "blauth-e2e-sd.")
	if err != nil {
		return nil, err
	}
	id := filepath.Base(dir)[len("blauth-e2e-sd."):]
	hh = &harness{repo: repo, dir: dir, dockerDir: filepath.Join(dir, "d"),
		image: "blauth-e2e-systemd:" + strings.ToLower(id), base: "blauth-e2e-base:" + strings.ToLower(id),
		debs: map[string]string{}}
	h = hh // tearDown must find it, whatever fails below
	defer func() {
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e/systemd: set-up failed: %v\n", err)
		}
	}()
	hh.api = blaxeltest.New(2 * time.Hour)

	// The engine, the root file system, the packages and the client build side by side.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	wg.Add(4)
	go func() { defer wg.Done(); errs[0] = hh.step("start a private dockerd", hh.startDocker) }()
	go func() { defer wg.Done(); errs[1] = hh.step("debootstrap the root file system", hh.debootstrap) }()
	go func() { defer wg.Done(); errs[2] = hh.step("build the two .deb packages", hh.buildDebs) }()
	go func() { defer wg.Done(); errs[3] = hh.step("build the static e2e client", hh.buildClient) }()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return hh, err
	}
	if err := hh.step("import the root file system as an image", hh.importImage); err != nil {
		return hh, err
	}
	if err := hh.step("build the test image (Dockerfile)", hh.buildImage); err != nil {
		return hh, err
	}
	if err := hh.step("boot systemd and the user manager", hh.boot); err != nil {
		return hh, err
	}
	if err := hh.step("dpkg -i "+version1+" and the user's setup", hh.install); err != nil {
		return hh, err
	}
	return hh, nil
}

// run runs a host command with a time limit and returns its combined output.
func run(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s did not finish within %s", name, timeout)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(string(out), 3000))
	}
	return string(out), nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func (h *harness) startDocker() error {
	out, err := run(60*time.Second, nil, filepath.Join(h.repo, ".ci/dockerd.sh"), "start", h.dockerDir)
	if err != nil {
		return err
	}
	host := strings.TrimSpace(lastLine(out))
	if !strings.HasPrefix(host, "unix://") {
		return fmt.Errorf("dockerd.sh printed %q, not a DOCKER_HOST", host)
	}
	h.dockerEnv = []string{"DOCKER_HOST=" + host, "DOCKER_BUILDKIT=0"}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// docker runs the docker client against the private engine.
func (h *harness) docker(timeout time.Duration, args ...string) (string, error) {
	return run(timeout, h.dockerEnv, "docker", args...)
}

// aptMirror finds the Debian mirror and suite in the machine's apt sources.
func aptMirror() (mirror, suite string, err error) {
	if m := os.Getenv("BLAUTH_E2E_MIRROR"); m != "" {
		mirror = m
	}
	osr, _ := os.ReadFile("/etc/os-release")
	for _, l := range strings.Split(string(osr), "\n") {
		if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok {
			suite = strings.Trim(v, `"`)
		}
	}
	if suite == "" {
		return "", "", errors.New("no VERSION_CODENAME in /etc/os-release: the suite runs on Debian")
	}
	if mirror != "" {
		return mirror, suite, nil
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if strings.HasSuffix(f, ".sources") {
			// deb822: blocks of fields; the block whose Suites names the release itself.
			for _, block := range strings.Split(string(data), "\n\n") {
				var uris, suites []string
				for _, l := range strings.Split(block, "\n") {
					if v, ok := strings.CutPrefix(l, "URIs:"); ok {
						uris = strings.Fields(v)
					}
					if v, ok := strings.CutPrefix(l, "Suites:"); ok {
						suites = strings.Fields(v)
					}
				}
				for _, s := range suites {
					if s == suite && len(uris) > 0 {
						return uris[0], suite, nil
					}
				}
			}
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "deb" {
				continue
			}
			f = f[1:]
			if strings.HasPrefix(f[0], "[") { // [options]
				for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
					f = f[1:]
				}
				f = f[1:]
			}
			if len(f) >= 2 && f[1] == suite {
				return f[0], suite, nil
			}
		}
	}
	return "", "", fmt.Errorf("no apt source for %s in /etc/apt/sources.list*; set BLAUTH_E2E_MIRROR", suite)
}

// packagesInImage are what the container needs beyond minbase: systemd as PID 1 and a user
// manager with its own session bus, gnome-keyring as the user's Secret Service, secret-tool to
// look at it, and procps for ps and kill.
var packagesInImage = []string{"systemd", "systemd-sysv", "dbus", "dbus-user-session", "libpam-systemd",
	"gnome-keyring", "libsecret-tools", "procps"}

func (h *harness) rootfs() string { return filepath.Join(h.dir, "rootfs") }

func (h *harness) debootstrap() error {
	mirror, suite, err := aptMirror()
	if err != nil {
		return err
	}
	root := h.rootfs()
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	// On a tmpfs: dpkg's fsyncs cost nothing there, and tear-down is one umount.
	if _, err := run(30*time.Second, nil, "mount", "-t", "tmpfs", "-o", "size=3g,mode=0755", "blauth-e2e-rootfs", root); err != nil {
		return err
	}
	// BLAUTH_E2E_ROOTFS_CACHE (for development only, never set in CI): a tar of an earlier
	// debootstrap, used when it exists and written when it does not.
	cache := os.Getenv("BLAUTH_E2E_ROOTFS_CACHE")
	if cache != "" && fileExists(cache) {
		if _, err := run(5*time.Minute, nil, "tar", "-C", root, "--numeric-owner", "-xf", cache); err != nil {
			return err
		}
	} else {
		if _, err := run(12*time.Minute, nil, "debootstrap", "--variant=minbase",
			"--include="+strings.Join(packagesInImage, ","), suite, root, mirror); err != nil {
			return fmt.Errorf("debootstrap %s from %s: %w", suite, mirror, err)
		}
		if cache != "" {
			if _, err := run(5*time.Minute, nil, "tar", "-C", root, "--numeric-owner", "-cf", cache, "."); err != nil {
				return err
			}
		}
	}
	// The user, lingering: its manager starts at boot without a login.
	if _, err := run(time.Minute, nil, "chroot", root, "id", user); err != nil {
		if _, err := run(time.Minute, nil, "chroot", root, "useradd", "-m", "-u", strconv.Itoa(uid), "-s", "/bin/bash", user); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "var/lib/systemd/linger"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/systemd/linger", user), nil, 0o644); err != nil {
		return err
	}
	// Nothing periodic should run during the tests.
	for _, unit := range []string{"apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer"} {
		_ = os.Symlink("/dev/null", filepath.Join(root, "etc/systemd/system", unit))
	}
	return nil
}

func (h *harness) buildDebs() error {
	arch := runtime.GOARCH
	for _, v := range []string{version1, version2} {
		dist := filepath.Join(h.dir, "dist-"+v)
		env := []string{"ARCHES=" + arch, "PACKAGERS=deb", "DIST=" + dist, "BINDIR=" + filepath.Join(h.dir, "bin-"+v)}
		if _, err := run(10*time.Minute, env, filepath.Join(h.repo, "packaging/build.sh"), v); err != nil {
			return err
		}
		debs, _ := filepath.Glob(filepath.Join(dist, "blauth_*_"+arch+".deb"))
		if len(debs) != 1 {
			return fmt.Errorf("packaging/build.sh %s made %d .deb files for %s, want 1", v, len(debs), arch)
		}
		if err := os.Rename(debs[0], filepath.Join(h.dir, "blauth-"+v+".deb")); err != nil {
			return err
		}
		h.debs[v] = "/opt/e2e/blauth-" + v + ".deb"
	}
	return nil
}

func (h *harness) buildClient() error {
	_, err := run(5*time.Minute, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o",
		filepath.Join(h.dir, "e2eclient"), filepath.Join(h.repo, "e2e/systemd/e2eclient"))
	return err
}

func (h *harness) importImage() error {
	// tar | docker import, without a shell: the pipe is ours.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tarCmd := exec.CommandContext(ctx, "tar", "-C", h.rootfs(), "--numeric-owner", "-c", ".")
	imp := exec.CommandContext(ctx, "docker", "import", "-", h.base)
	imp.Env = append(os.Environ(), h.dockerEnv...)
	pipe, err := tarCmd.StdoutPipe()
	if err != nil {
		return err
	}
	imp.Stdin = pipe
	var tarErr, impOut bytes.Buffer
	tarCmd.Stderr = &tarErr
	imp.Stdout, imp.Stderr = &impOut, &impOut
	if err := tarCmd.Start(); err != nil {
		return err
	}
	if err := imp.Run(); err != nil {
		_ = tarCmd.Wait()
		return fmt.Errorf("docker import: %w: %s", err, impOut.String())
	}
	if err := tarCmd.Wait(); err != nil {
		return fmt.Errorf("tar: %w: %s", err, tarErr.String())
	}
	// The image holds it now; the tmpfs can go.
	return h.removeRootfs()
}

func (h *harness) removeRootfs() error {
	root := h.rootfs()
	if _, err := os.Stat(root); err != nil {
		return nil
	}
	_, _ = run(30*time.Second, nil, "umount", root)
	return os.RemoveAll(root)
}

const dockerfile = `FROM %s
COPY blauth-` + version1 + `.deb blauth-` + version2 + `.deb e2eclient /opt/e2e/
ENV container=docker
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
`

func (h *harness) buildImage() error {
	ctxDir := filepath.Join(h.dir, "image")
	if err := os.Mkdir(ctxDir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{"blauth-" + version1 + ".deb", "blauth-" + version2 + ".deb", "e2eclient"} {
		if err := os.Rename(filepath.Join(h.dir, f), filepath.Join(ctxDir, f)); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(fmt.Sprintf(dockerfile, h.base)), 0o644); err != nil {
		return err
	}
	_, err := h.docker(5*time.Minute, "build", "-q", "-t", h.image, ctxDir)
	return err
}

func (h *harness) boot() error {
	name := "blauth-e2e-" + h.image[strings.LastIndex(h.image, ":")+1:]
	// Why these flags: systemd needs CAP_SYS_ADMIN and no seccomp/AppArmor profile to build
	// the units' sandboxes; its own cgroup namespace and a tmpfs on /sys/fs/cgroup, on which it
	// mounts the hierarchies itself (binding the host's /sys/fs/cgroup makes every sandboxed
	// unit fail with 226/NAMESPACE: see docs/OPERATIONS.md); the host's network, so that the
	// daemon reaches the test's fake Blaxel API on 127.0.0.1.
	out, err := h.docker(time.Minute, "run", "-d", "--name", name,
		"--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
		"--cgroupns", "private", "--tmpfs", "/sys/fs/cgroup", "--tmpfs", "/run", "--tmpfs", "/run/lock",
		"--network", "host", h.image)
	if err != nil {
		return err
	}
	h.container = name
	h.containerID = strings.TrimSpace(lastLine(out))
	deadline := time.Now().Add(90 * time.Second)
	var state string
	for time.Now().Before(deadline) {
		state, _ = h.docker(10*time.Second, "exec", name, "systemctl", "is-system-running")
		state = strings.TrimSpace(state)
		if state == "running" || state == "degraded" {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if state != "running" && state != "degraded" {
		logs, _ := h.docker(10*time.Second, "logs", name)
		return fmt.Errorf("systemd did not finish booting within 90 s (state %q)\n%s", state, tail(logs, 3000))
	}
	if state == "degraded" {
		failed, _ := h.docker(10*time.Second, "exec", name, "systemctl", "--failed", "--no-legend")
		fmt.Fprintf(os.Stderr, "e2e/systemd: the container booted degraded (not blauth's units):\n%s", failed)
	}
	for time.Now().Before(deadline) {
		if _, err := h.docker(10*time.Second, "exec", name, "test", "-S", runtime1+"/bus"); err == nil {
			if s, _ := h.docker(10*time.Second, "exec", name, "systemctl", "is-active", fmt.Sprintf("user@%d.service", uid)); strings.TrimSpace(s) == "active" {
				return nil
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("user@%d.service and its session bus did not come up within 90 s", uid)
}

// install installs the first package as an administrator would, and sets up what the user
// brings: an unlocked login keyring served by gnome-keyring as the user's D-Bus service, and
// BL_API_URL for the daemon in a drop-in pointing at the test's fake Blaxel API.
func (h *harness) install() error {
	if out, err := h.docker(2*time.Minute, "exec", h.container, "dpkg", "-i", h.debs[version1]); err != nil {
		return err
	} else if !strings.Contains(out, "systemctl --user enable --now blauthd.socket") {
		return fmt.Errorf("dpkg -i did not print how to enable the daemon:\n%s", out)
	}
	setup := fmt.Sprintf(`set -e
umask 077
mkdir -p ~/.config/systemd/user/gnome-keyring-daemon.service.d ~/.config/systemd/user/blauthd.service.d
cat > ~/.config/e2e-keyring-password   # from stdin: never on a command line
cat > ~/.config/systemd/user/gnome-keyring-daemon.service.d/e2e-unlock.conf <<'EOF'
# The test keyring: created and unlocked with a password read from a file, the way a desktop
# login unlocks it through PAM.
[Service]
ExecStart=
ExecStart=/usr/bin/gnome-keyring-daemon --foreground --unlock --components=secrets --control-directory=%%t/keyring
StandardInput=file:%%h/.config/e2e-keyring-password
EOF
cat > ~/.config/systemd/user/blauthd.service.d/e2e-api.conf <<'EOF'
[Service]
Environment=BL_API_URL=%s
EOF
systemctl --user daemon-reload
systemctl --user restart gnome-keyring-daemon.service
`, h.api.Base)
	if out, err := h.userShell(30*time.Second, setup, keyringPassword); err != nil {
		return fmt.Errorf("user set-up: %w\n%s", err, out)
	}
	// The keyring answers, unlocked, before the daemon first asks it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := h.userShell(10*time.Second, `printf x | secret-tool store --label=e2e-probe service e2e-probe username probe && secret-tool clear service e2e-probe username probe`, "")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the user's keyring does not answer: %s", out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	h.remember(keyringPassword)
	return nil
}

// userEnv is the environment of a command run as the user, as a login shell would have it.
// BLAUTH_NO_SPAWN: the helper must reach the daemon that systemd runs, never start its own.
var userEnv = []string{"HOME=" + home, "USER=" + user, "LOGNAME=" + user, "PATH=/usr/local/bin:/usr/bin:/bin",
	"XDG_RUNTIME_DIR=" + runtime1, "DBUS_SESSION_BUS_ADDRESS=unix:path=" + runtime1 + "/bus", "BLAUTH_NO_SPAWN=1", "LANG=C.UTF-8"}

// userCmd builds `docker exec` of argv as the user, in their home directory. Secrets never go
// on a command line: pass them on stdin.
func (h *harness) userCmd(ctx context.Context, argv ...string) *exec.Cmd {
	args := []string{"exec", "-i", "-w", home, h.container, "runuser", "-u", user, "--", "env", "-i"}
	args = append(args, userEnv...)
	args = append(args, argv...)
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), h.dockerEnv...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// userShell runs a sh script as the user with stdin, and returns stdout and stderr together.
func (h *harness) userShell(timeout time.Duration, script, stdin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := h.userCmd(ctx, "sh", "-c", script)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("did not finish within %s", timeout)
	}
	return string(out), err
}

// userRun runs argv as the user; stdout and stderr apart.
func (h *harness) userRun(timeout time.Duration, stdin string, argv ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := h.userCmd(ctx, argv...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s did not finish within %s", strings.Join(argv, " "), timeout)
	}
	return o.String(), e.String(), err
}

// withEnv wraps argv so that it runs with the KEY=VALUE lines given on stdin exported: the way
// to hand a command a secret in its environment without putting it on a command line.
func withEnv(argv ...string) []string {
	return append([]string{"sh", "-c", `while IFS= read -r kv; do export "$kv"; done; exec "$@"`, "sh"}, argv...)
}

// envLines is stdin for withEnv.
func envLines(kv ...string) string {
	if len(kv) == 0 {
		return ""
	}
	return strings.Join(kv, "\n") + "\n"
}

// user runs argv as the user and ends the test on failure, with the daemon's journal.
func (h *harness) user(t *testing.T, argv ...string) string {
	t.Helper()
	out, errOut, err := h.userRun(time.Minute, "", argv...)
	if err != nil {
		h.fatalf(t, "%s: %v\nstdout: %s\nstderr: %s", strings.Join(argv, " "), err, out, errOut)
	}
	return out
}

// root runs argv as root in the container.
func (h *harness) root(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := h.docker(2*time.Minute, append([]string{"exec", h.container}, argv...)...)
	if err != nil {
		h.fatalf(t, "%v", err)
	}
	return out
}

// journal is the daemon's recent journal, for failure messages.
func (h *harness) journal() string {
	out, _ := h.userShell(20*time.Second, "journalctl --user -u blauthd.service -u blauthd.socket -n 60 --no-pager -o short-monotonic 2>&1; systemctl --user status blauthd.service blauthd.socket --no-pager 2>&1 | head -30", "")
	return out
}

// fatalf ends the test with the message and the daemon's journal.
func (h *harness) fatalf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatalf(format+"\n--- journalctl --user -u blauthd (last lines) ---\n%s", append(args, h.journal())...)
}

// errorf reports a failure with the daemon's journal and lets the test go on.
func (h *harness) errorf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Errorf(format+"\n--- journalctl --user -u blauthd (last lines) ---\n%s", append(args, h.journal())...)
}

// show reads unit properties with systemctl --user show.
func (h *harness) show(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	args := []string{"systemctl", "--user", "show", unit}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out := h.user(t, args...)
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

// waitFor polls cond every 200 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// background runs argv as the user without waiting; wait returns its outputs and error.
func (h *harness) background(timeout time.Duration, stdin string, argv ...string) (wait func() (string, string, error), stderrLines <-chan string) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	cmd := h.userCmd(ctx, argv...)
	cmd.Stdin = strings.NewReader(stdin)
	var o bytes.Buffer
	var e bytes.Buffer
	cmd.Stdout = &o
	lines := make(chan string, 64)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			e.WriteString(sc.Text() + "\n")
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	errc := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		cancel()
		pw.Close()
		errc <- err
	} else {
		go func() { err := cmd.Wait(); pw.Close(); errc <- err }()
	}
	var once sync.Once
	var res [2]string
	var rerr error
	return func() (string, string, error) {
		once.Do(func() {
			rerr = <-errc
			if ctx.Err() != nil {
				rerr = fmt.Errorf("%s did not finish within %s", strings.Join(argv, " "), timeout)
			}
			cancel()
			for range lines {
			}
			res = [2]string{o.String(), e.String()}
		})
		return res[0], res[1], rerr
	}, lines
}

func (h *harness) tearDown() {
	if h.api != nil {
		h.api.Close()
	}
	if h.container != "" {
		_, _ = h.docker(2*time.Minute, "rm", "-f", "-v", h.container)
	}
	for _, img := range []string{h.image, h.base} {
		_, _ = h.docker(time.Minute, "rmi", "-f", img)
	}
	if h.dockerEnv != nil || dirExists(h.dockerDir) {
		if out, err := run(2*time.Minute, nil, filepath.Join(h.repo, ".ci/dockerd.sh"), "stop", h.dockerDir); err != nil {
			fmt.Fprintf(os.Stderr, "e2e/systemd: stopping dockerd: %v\n%s", err, out)
		}
	}
	_ = h.removeRootfs()
	if err := os.RemoveAll(h.dir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e/systemd: removing %s: %v\n", h.dir, err)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
