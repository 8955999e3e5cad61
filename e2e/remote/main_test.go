//go:build remote

package remotee2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
	"github.com/blauth/blauth/ipc"
)

// otherUID is a uid that no account on the machine needs to have: the "another user" of the
// tests, and the daemon's user where a test runs it as someone other than root.
const otherUID = 4242

// suite is what TestMain set up for every test.
var suite struct {
	repo string           // the repository's root
	root string           // everything the run makes: /tmp/bl-remote-*, short for socket paths
	bins e2etest.Binaries // static blauthd and blauth-helper, under root/bin (mode 0755)

	mu      sync.Mutex
	engine  *engine // the private dockerd, started by the first test that needs it
	madeRun bool    // TestMain made /run/sshd (sshd's privilege separation directory)
	timings []string
}

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	start := time.Now()
	var err error
	if suite.repo, err = e2etest.ModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/remote:", err)
		return 1
	}
	// 0755: a daemon run as otherUID must reach its binary below it.
	if suite.root, err = os.MkdirTemp("/tmp", "bl-remote-"); err == nil {
		err = os.Chmod(suite.root, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/remote:", err)
		return 1
	}
	// Processes of an earlier run that was killed before it could clean up: not ours to stop,
	// but worth knowing about.
	before := e2etest.ProcsNaming("/tmp/bl-remote-")
	code := func() int {
		bin := filepath.Join(suite.root, "bin")
		if err := os.Mkdir(bin, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/remote:", err)
			return 1
		}
		t0 := time.Now()
		if suite.bins, err = e2etest.BuildBinaries(suite.repo, bin, "e2e-remote"); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/remote:", err)
			return 1
		}
		timing("build blauthd and blauth-helper (CGO_ENABLED=0)", time.Since(t0))
		return m.Run()
	}()
	if suite.engine != nil {
		t0 := time.Now()
		if err := suite.engine.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e/remote: FAIL: stopping dockerd: %v\n", err)
			code = 1
		}
		timing("stop dockerd, remove its containers, images and volumes", time.Since(t0))
	}
	if suite.madeRun {
		_ = os.Remove("/run/sshd") // only if still empty
	}
	// Whatever is left now was started by this run and not stopped: sshd and its sessions, ssh,
	// blauthd, helpers, dockerd, containerd, shims, container processes.
	left := waitNoProcesses(10 * time.Second)
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "e2e/remote: FAIL: processes left after the run:\n  %s\n", strings.Join(left, "\n  "))
		code = 1
	} else {
		fmt.Fprintf(os.Stderr, "e2e/remote: processes of any run of this suite before it started: %d; of this run after it: none\n", len(before))
	}
	if err := os.RemoveAll(suite.root); err != nil {
		fmt.Fprintf(os.Stderr, "e2e/remote: removing %s: %v\n", suite.root, err)
		code = 1
	}
	for _, t := range suite.timings {
		fmt.Fprintln(os.Stderr, "e2e/remote: time:", t)
	}
	fmt.Fprintf(os.Stderr, "e2e/remote: whole run %s\n", time.Since(start).Round(100*time.Millisecond))
	return code
}

// timing records how long a step took, for the summary TestMain prints.
func timing(what string, d time.Duration) {
	suite.mu.Lock()
	defer suite.mu.Unlock()
	suite.timings = append(suite.timings, fmt.Sprintf("%-58s %6.1fs", what, d.Seconds()))
}

// ourProcesses lists the processes of this run: those whose command line names the run's
// directory (every binary, key, socket and engine directory lives below it), and those in one
// of its containers (their cgroup names the container's id).
func ourProcesses() []string {
	var ids []string
	if e := suite.engine; e != nil {
		ids = e.containerIDs()
	}
	return e2etest.ProcsNaming(suite.root, ids...)
}

// waitNoProcesses waits up to timeout for the run's processes to end (some are still exiting)
// and returns those still there.
func waitNoProcesses(timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		left := ourProcesses()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// needRoot ends a test that cannot run without root: failed in CI, skipped elsewhere.
func needRoot(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		e2etest.Missing(t, "Linux", "the suite drives Linux user namespaces, sshd and dockerd")
	}
	if os.Geteuid() != 0 {
		e2etest.Missing(t, "root", "run the suite as root, as .ci/run does")
	}
}

// needCommands ends the test when a command is missing: failed in CI, skipped elsewhere.
func needCommands(t *testing.T, pkg string, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			e2etest.Missing(t, c, "apt-get install "+pkg+", or run .ci/install-deps.sh")
		}
	}
}

// newDir makes a directory under the run's directory, removed when the test ends.
func newDir(t *testing.T, name string, mode os.FileMode) string {
	t.Helper()
	d, err := os.MkdirTemp(suite.root, name+"-")
	if err == nil {
		err = os.Chmod(d, mode)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// mkdirs makes each directory (and its parents) with mode, owned by uid (-1: as made).
func mkdirs(t *testing.T, mode os.FileMode, uid int, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		if uid >= 0 {
			if err := os.Chown(d, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// result is a finished command.
type result struct {
	stdout, stderr string
	code           int // exit status; -1 when it did not run or was killed
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("exit %d (%v)\nstdout: %s\nstderr: %s", r.code, r.err, r.stdout, r.stderr)
}

// runCmd runs a command to its end, bounded by timeout. env replaces the environment when not
// nil; stdin may be "".
func runCmd(timeout time.Duration, env []string, stdin string, name string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = env
	}
	cmd.Dir = "/"
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := result{stdout: o.String(), stderr: e.String(), code: -1, err: err}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("%s did not finish within %s", name, timeout)
	}
	return r
}

// baseEnv is the environment of the processes a test starts: nothing of the test's own but PATH
// (no BL_* variable leaks in).
func baseEnv(extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "TZ=UTC", "LANG=C.UTF-8"}, extra...)
}

// fakeAPI starts the fake Blaxel API with a service account bound to workspace, and returns it
// with the account's BL_CLIENT_CREDENTIALS value and secret.
func fakeAPI(t *testing.T, ttl time.Duration, workspace string) (api *blaxeltest.Server, credentials, secret string) {
	t.Helper()
	api = e2etest.StartAPI(t, ttl)
	secret = "remote-e2e-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	credentials = api.AddClient("sa-"+workspace, secret)
	api.BindClient("sa-"+workspace, workspace)
	return api, credentials, secret
}

// apiAccepts reports whether the fake API accepts token for workspace, as a Blaxel SDK would
// call it (GET {base}/models with Blaxel's headers).
func apiAccepts(t *testing.T, api *blaxeltest.Server, token, workspace string) bool {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, api.Base+"/models", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Blaxel-Authorization", "Bearer "+token)
	req.Header.Set("X-Blaxel-Workspace", workspace)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// noSecrets fails the test when any secret appears in text (a log, an environment).
func noSecrets(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s holds a secret (%d bytes, starting %.6q…)", what, len(s), s)
		}
	}
}

// daemonOpts describe one blauthd process on this machine.
type daemonOpts struct {
	socket string   // --socket
	args   []string // more flags
	env    []string // BL_* and the like, added to baseEnv and HOME
	home   string   // HOME
	// uid, when not 0, runs the daemon as that uid and gid (setuid before exec).
	uid int
	// ownUserNamespace runs it in a user namespace of its own that maps only its own uid, as
	// systemd's PrivateUsers=yes does for a user manager's services: any other uid is unmapped
	// there.
	ownUserNamespace bool
	// sockets are more sockets (scoped ones) to wait for.
	sockets []string
}

// daemon is a running blauthd.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  *testkit.SyncBuffer
}

// startDaemon starts the real blauthd and waits until every one of its sockets answers (an
// error answer counts: a daemon of another uid refuses the test, which is root, with forbidden).
// It stops it (SIGTERM, then SIGKILL after 15 s) when the test ends, and logs what it logged.
func startDaemon(t *testing.T, o daemonOpts) *daemon {
	t.Helper()
	args := append([]string{"--socket", o.socket, "--log-format", "json", "--no-keyring"}, o.args...)
	cmd := exec.Command(suite.bins.Blauthd, args...)
	cmd.Env = baseEnv(append([]string{"HOME=" + o.home}, o.env...)...)
	cmd.Dir = "/"
	attr := &syscall.SysProcAttr{Setpgid: true}
	switch {
	case o.ownUserNamespace:
		attr.Cloneflags = syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: o.uid, HostID: o.uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: o.uid, HostID: o.uid, Size: 1}}
		attr.Credential = &syscall.Credential{Uid: uint32(o.uid), Gid: uint32(o.uid), NoSetGroups: true}
	case o.uid != 0:
		attr.Credential = &syscall.Credential{Uid: uint32(o.uid), Gid: uint32(o.uid), NoSetGroups: true}
	}
	cmd.SysProcAttr = attr
	d := &daemon{cmd: cmd, done: make(chan struct{}), log: &testkit.SyncBuffer{}}
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start blauthd: %v", err)
	}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.stop(t)
		t.Logf("blauthd %d logged:\n%s", cmd.Process.Pid, d.log.String())
	})
	for _, s := range append([]string{o.socket}, o.sockets...) {
		if err := d.waitAnswer(s, 15*time.Second); err != nil {
			t.Fatalf("blauthd did not come up: %v\n%s", err, d.log.String())
		}
	}
	t.Logf("blauthd %d serving %s (uid %d, own user namespace %v)", cmd.Process.Pid, strings.Join(append([]string{o.socket}, o.sockets...), ", "), o.uid, o.ownUserNamespace)
	return d
}

func (d *daemon) waitAnswer(socket string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.done:
			return fmt.Errorf("blauthd exited: %v", d.err)
		default:
		}
		if c, err := ipc.Dial(socket, time.Second); err == nil {
			resp, _ := c.Do(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionPing))
			c.Close()
			if resp != nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on %s within %s", socket, timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// alive reports whether the daemon still runs.
func (d *daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// stop ends the daemon with SIGTERM and fails the test unless it exits cleanly within 15 s.
func (d *daemon) stop(t *testing.T) {
	if !d.alive() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if d.err != nil {
			t.Errorf("blauthd exited with %v after SIGTERM", d.err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("blauthd did not stop within 15 s of SIGTERM; killing it")
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// helperAs runs blauth-helper on this machine as uid (0: root) with the socket in BLAUTH_SOCKET
// and no spawning, in "/" (any user can stat it).
func helperAs(uid int, socket string, args ...string) result {
	argv := append([]string{"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(uid), "--clear-groups", suite.bins.Helper}, args...)
	return runCmd(30*time.Second, baseEnv(ipc.SocketEnv+"="+socket, "BLAUTH_NO_SPAWN=1"), "", "setpriv", argv...)
}
