//go:build remote

package remotee2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/e2etest"
	"github.com/blauth/blauth/ipc"
)

// sshd is an OpenSSH server run by a test, on a loopback port, with a throwaway host key.
type sshd struct {
	cmd    *exec.Cmd
	port   int
	dir    string
	log    *testkit.SyncBuffer
	done   chan struct{}
	config string // the client's ssh_config
}

// needSSH ends the test unless root, sshd, ssh and ssh-keygen are there, and makes sshd's
// privilege separation directory if the machine has none (TestMain removes it again).
func needSSH(t *testing.T) {
	t.Helper()
	needRoot(t)
	needCommands(t, "openssh-server", "/usr/sbin/sshd")
	needCommands(t, "openssh-client", "ssh", "ssh-keygen")
	needCommands(t, "util-linux", "setpriv")
	suite.mu.Lock()
	defer suite.mu.Unlock()
	if _, err := os.Stat("/run/sshd"); os.IsNotExist(err) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
		suite.madeRun = true
	}
}

// keygen makes an ed25519 key pair without a passphrase at path and path.pub.
func keygen(t *testing.T, path string) {
	t.Helper()
	if r := runCmd(30*time.Second, nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "blauth-e2e", "-f", path); r.code != 0 {
		t.Fatalf("ssh-keygen: %s", r)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startSSHD starts sshd as the docs' recipe configures it (unlink: StreamLocalBindUnlink=yes),
// with keys made for the test, and writes the client's ssh_config: host "remote" for commands,
// "remote-fwd" for the forwarding session (RemoteForward remoteSock localSock). It logs in as
// root with the key, which sshd's default PermitRootLogin (prohibit-password) allows: no account
// is created on the machine for the test.
func startSSHD(t *testing.T, unlink bool, remoteSock, localSock string) *sshd {
	t.Helper()
	dir := newDir(t, "sshd", 0o700)
	hostKey, userKey := filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "user_ed25519")
	keygen(t, hostKey)
	keygen(t, userKey)
	pub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	yesNo := map[bool]string{true: "yes", false: "no"}
	for attempt := 1; ; attempt++ {
		s := &sshd{port: freePort(t), dir: dir, log: &testkit.SyncBuffer{}, done: make(chan struct{})}
		s.cmd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-h", hostKey,
			"-o", "ListenAddress=127.0.0.1", "-o", "Port="+strconv.Itoa(s.port),
			"-o", "AuthorizedKeysFile="+authorized, "-o", "StrictModes=no", "-o", "PidFile=none",
			"-o", "PermitRootLogin=prohibit-password", "-o", "PasswordAuthentication=no",
			"-o", "AllowStreamLocalForwarding=yes", "-o", "StreamLocalBindUnlink="+yesNo[unlink])
		s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
		s.cmd.Dir = "/"
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("start sshd: %v", err)
		}
		go func() { _ = s.cmd.Wait(); close(s.done) }()
		t.Cleanup(func() { s.stop(t) })
		ready := testkit.Eventually(10*time.Second, func() bool {
			select {
			case <-s.done:
				return true
			default:
			}
			return strings.Contains(s.log.String(), "Server listening on 127.0.0.1 port "+strconv.Itoa(s.port))
		})
		select {
		case <-s.done:
			if attempt < 3 && strings.Contains(s.log.String(), "Address already in use") {
				continue // another process took the port in between
			}
			t.Fatalf("sshd exited at start:\n%s", s.log.String())
		default:
		}
		if !ready {
			t.Fatalf("sshd did not listen within 10 s:\n%s", s.log.String())
		}
		known := filepath.Join(dir, "known_hosts")
		line := fmt.Sprintf("[127.0.0.1]:%d %s", s.port, strings.Join(strings.Fields(string(hostPub))[:2], " "))
		if err := os.WriteFile(known, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// The documented client configuration (docs/REMOTE.md), with this run's keys and port.
		cfg := fmt.Sprintf(`Host remote remote-fwd
  HostName 127.0.0.1
  Port %d
  User root
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR

Host remote-fwd
  RemoteForward %s %s
  ExitOnForwardFailure yes
  ServerAliveInterval 15
`, s.port, userKey, known, remoteSock, localSock)
		s.config = filepath.Join(dir, "ssh_config")
		if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Logf("sshd %d on 127.0.0.1:%d (StreamLocalBindUnlink=%s)", s.cmd.Process.Pid, s.port, yesNo[unlink])
		return s
	}
}

// sessions lists the processes sshd forked for connections (its children).
func (s *sshd) sessions() []int {
	var kids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so read after the last ')'.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(s.cmd.Process.Pid) {
			kids = append(kids, pid)
		}
	}
	return kids
}

// stop waits for sshd's sessions to end (their clients were stopped first), then ends the
// listener. A session still there after 10 s fails the test and is killed: it is ours.
func (s *sshd) stop(t *testing.T) {
	select {
	case <-s.done:
		return
	default:
	}
	if !testkit.Eventually(10*time.Second, func() bool { return len(s.sessions()) == 0 }) {
		kids := s.sessions()
		t.Errorf("sshd sessions %v still run 10 s after their clients stopped; killing them", kids)
		for _, k := range kids {
			_ = syscall.Kill(k, syscall.SIGKILL)
		}
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Errorf("sshd did not stop within 10 s of SIGTERM; killing it")
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	t.Logf("sshd logged:\n%s", s.log.String())
}

// forward is a running `ssh -N remote-fwd`: the forwarding session.
type forward struct {
	cmd     *exec.Cmd
	started time.Time
	log     *testkit.SyncBuffer
	done    chan struct{}
	err     error
}

// startForward starts the forwarding session and waits until sshd has made the remote socket.
func (s *sshd) startForward(t *testing.T, remoteSock string) *forward {
	t.Helper()
	f := s.forwardCmd(t)
	if !testkit.Eventually(15*time.Second, func() bool {
		if !f.alive() {
			return true
		}
		fi, err := os.Stat(remoteSock)
		return err == nil && fi.Mode()&os.ModeSocket != 0 && f.socketIsNew(remoteSock)
	}) || !f.alive() {
		t.Fatalf("the forwarding session did not make %s within 15 s (ssh: %v)\n%s\nsshd:\n%s", remoteSock, f.err, f.log.String(), s.log.String())
	}
	return f
}

// forwardCmd starts ssh -N remote-fwd without waiting for anything.
func (s *sshd) forwardCmd(t *testing.T) *forward {
	t.Helper()
	f := &forward{log: &testkit.SyncBuffer{}, done: make(chan struct{}), started: time.Now()}
	f.cmd = exec.Command("ssh", "-F", s.config, "-N", "remote-fwd")
	f.cmd.Env = baseEnv("HOME=" + s.dir)
	f.cmd.Stdout, f.cmd.Stderr = f.log, f.log
	f.cmd.Dir = "/"
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("start ssh: %v", err)
	}
	go func() { f.err = f.cmd.Wait(); close(f.done) }()
	t.Cleanup(func() { f.stop(t) })
	return f
}

// socketIsNew reports whether the socket at path was made after this session started: a stale
// one left by an earlier session does not count.
func (f *forward) socketIsNew(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	// The kernel's file times come from a coarse clock: allow it a few milliseconds.
	return time.Unix(st.Ctim.Unix()).After(f.started.Add(-20 * time.Millisecond))
}

func (f *forward) alive() bool {
	select {
	case <-f.done:
		return false
	default:
		return true
	}
}

// wait waits up to timeout for ssh to exit, and returns its exit status (-1 when a signal
// ended it) and whether it exited.
func (f *forward) wait(timeout time.Duration) (code int, exited bool) {
	select {
	case <-f.done:
		return f.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// stop ends the session as a user would (SIGTERM) and waits for ssh to exit.
func (f *forward) stop(t *testing.T) {
	if !f.alive() {
		return
	}
	_ = f.cmd.Process.Signal(syscall.SIGTERM)
	if _, exited := f.wait(10 * time.Second); !exited {
		t.Errorf("ssh did not stop within 10 s of SIGTERM; killing it")
		_ = f.cmd.Process.Kill()
		<-f.done
	}
}

// remote runs a command on the "remote" host through ssh, as the user would type it after
// `ssh remote`; stdout and stderr are the remote command's.
func (s *sshd) remote(command string) result {
	return runCmd(60*time.Second, baseEnv("HOME="+s.dir), "", "ssh", "-F", s.config, "remote", command)
}

// TestSSHForwardsTheScopedSocket is the SSH recipe of docs/REMOTE.md with a real OpenSSH server
// and client: the laptop's blauthd serves a scoped socket for workspace acme; `ssh remote-fwd`
// forwards it with RemoteForward to the remote host (here the same machine, another directory,
// through sshd), where blauth-helper finds it by BLAUTH_SOCKET. What the remote side can and
// cannot do through it is checked case by case.
func TestSSHForwardsTheScopedSocket(t *testing.T) {
	needSSH(t)
	t0 := time.Now()
	// One-minute tokens, refreshed when 90 % of the life is left (after about 6 s): a watch
	// through the tunnel sees a refresh quickly.
	api, cc, secret := fakeAPI(t, time.Minute, "acme")
	laptop := newDir(t, "laptop", 0o700)
	home := filepath.Join(laptop, "home")
	mkdirs(t, 0o700, -1, home)
	fwd := filepath.Join(laptop, "run", "blauth-fwd", ipc.SocketName)
	d := startDaemon(t, daemonOpts{
		socket: filepath.Join(laptop, "run", "blauth", ipc.SocketName), home: home, sockets: []string{fwd},
		args: []string{"--scoped-socket", fwd + "=acme", "--refresh-left", "0.9", "--min-ttl", "5s"},
		env:  []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc, "BL_API_URL=" + api.Base},
	})
	// The remote user's runtime directory. Made 0755 here, so that the socket's own mode is what
	// keeps other users out (the recipe puts it in $XDG_RUNTIME_DIR, 0700: a second fence).
	remoteRun := newDir(t, "remote", 0o755)
	remoteSock := filepath.Join(remoteRun, "blauth.sock")
	s := startSSHD(t, true, remoteSock, fwd)
	f := s.startForward(t, remoteSock)
	timing("ssh: keys, sshd, daemon and the forward up", time.Since(t0))
	helper := fmt.Sprintf("env %s=%s BLAUTH_NO_SPAWN=1 %s", ipc.SocketEnv, remoteSock, suite.bins.Helper)

	var served []string // every token seen, for the log check
	t.Run("a token for the scoped workspace", func(t *testing.T) {
		t1 := time.Now()
		r := s.remote(helper + " token")
		if r.code != 0 || strings.TrimSpace(r.stdout) == "" || r.stderr != "" {
			t.Fatalf("remote `blauth-helper token`: %s", r)
		}
		tok := strings.TrimSpace(r.stdout)
		served = append(served, tok)
		if !apiAccepts(t, api, tok, "acme") {
			t.Fatalf("the API refuses the token fetched through the forward for acme")
		}
		t.Logf("FIGURES token over ssh: one remote command (ssh login + helper) %s", time.Since(t1).Round(time.Millisecond))
	})

	t.Run("the remote side's variables and .env are ignored", func(t *testing.T) {
		proj := filepath.Join(remoteRun, "project")
		mkdirs(t, 0o755, -1, proj)
		if err := os.WriteFile(filepath.Join(proj, ".env"), []byte("BL_WORKSPACE=acme\nBL_API_KEY=remote-dotenv-key\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := s.remote(fmt.Sprintf("cd %s && env BL_API_KEY=remote-env-key BL_WORKSPACE=acme BL_API_URL=http://127.0.0.1:9/v0 %s=%s BLAUTH_NO_SPAWN=1 %s token",
			proj, ipc.SocketEnv, remoteSock, suite.bins.Helper))
		tok := strings.TrimSpace(r.stdout)
		if r.code != 0 || tok == "remote-env-key" || tok == "remote-dotenv-key" || !apiAccepts(t, api, tok, "acme") {
			t.Fatalf("want the daemon's own token for acme, whatever the remote side sets: %s", r)
		}
	})

	t.Run("another workspace is refused", func(t *testing.T) {
		r := s.remote(helper + " -w other token")
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "workspace other is not served on this socket (it serves acme)") {
			t.Fatalf("remote `blauth-helper -w other token`: %s", r)
		}
	})

	t.Run("status, stop and reload are refused", func(t *testing.T) {
		for _, cmd := range []string{"status", "stop", "reload"} {
			r := s.remote(helper + " " + cmd)
			if r.code != 1 || !strings.Contains(r.stderr, "answers only get, watch and ping") {
				t.Errorf("remote `blauth-helper %s`: %s", cmd, r)
			}
		}
		if !d.alive() {
			t.Fatal("the daemon stopped")
		}
		if r := s.remote(helper + " ping"); r.code != 0 || !strings.Contains(r.stdout, "blauthd e2e-remote") {
			t.Fatalf("remote ping: %s", r)
		}
	})

	t.Run("the forwarded socket is the login user's alone", func(t *testing.T) {
		fi, err := os.Stat(remoteSock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Fatalf("the remote socket is %v owned by uid %d; want a socket of mode 0600 owned by the login user (root)", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
		}
		r := helperAs(otherUID, remoteSock, "token")
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "permission denied") {
			t.Fatalf("another user of the remote host asked the forwarded socket: %s", r)
		}
	})

	t.Run("a watch follows a refresh through the tunnel", func(t *testing.T) {
		served = append(served, watchOverSSH(t, s, remoteSock)...)
	})

	t.Run("a dead session leaves a stale socket, the next one replaces it", func(t *testing.T) {
		_ = f.cmd.Process.Kill() // a dropped connection, a killed terminal
		if _, exited := f.wait(10 * time.Second); !exited {
			t.Fatal("ssh did not die")
		}
		// sshd notices the closed connection and ends the session; the socket file stays.
		if !testkit.Eventually(10*time.Second, func() bool { return len(s.sessions()) == 0 }) {
			t.Fatal("sshd's session did not end within 10 s of the client's death")
		}
		if _, err := os.Stat(remoteSock); err != nil {
			t.Fatalf("want the stale socket left behind by the dead session: %v", err)
		}
		t1 := time.Now()
		r := s.remote(helper + " token")
		if r.code != 3 || !strings.Contains(r.stderr, "daemon unreachable") {
			t.Fatalf("remote token with no session forwarding: %s; want exit 3 (no daemon answers)", r)
		}
		t.Logf("FIGURES the stale socket: the helper exits 3 after %s", time.Since(t1).Round(time.Millisecond))
		f = s.startForward(t, remoteSock)
		r = s.remote(helper + " token")
		if tok := strings.TrimSpace(r.stdout); r.code != 0 || !apiAccepts(t, api, tok, "acme") {
			t.Fatalf("token through the new session: %s", r)
		}
		served = append(served, strings.TrimSpace(r.stdout))
	})

	t.Run("without StreamLocalBindUnlink a stale socket blocks the next forward", func(t *testing.T) {
		otherRun := newDir(t, "remote-nounlink", 0o700)
		sock := filepath.Join(otherRun, "blauth.sock")
		s2 := startSSHD(t, false, sock, fwd)
		f1 := s2.startForward(t, sock)
		_ = f1.cmd.Process.Kill()
		f1.wait(10 * time.Second)
		if !testkit.Eventually(10*time.Second, func() bool { return len(s2.sessions()) == 0 }) {
			t.Fatal("sshd's session did not end")
		}
		f2 := s2.forwardCmd(t)
		code, exited := f2.wait(20 * time.Second)
		if !exited || code <= 0 || !strings.Contains(f2.log.String(), "remote port forwarding failed") {
			t.Fatalf("want ssh to exit with 'remote port forwarding failed' (ExitOnForwardFailure); exit %d:\n%s", code, f2.log.String())
		}
		s2.stop(t)
	})

	f.stop(t)
	s.stop(t)
	t.Run("nothing of the daemon's leaked to its log", func(t *testing.T) {
		noSecrets(t, "blauthd's log", d.log.String(), append([]string{cc, secret}, served...)...)
	})
	timing("ssh: the whole test", time.Since(t0))
}

// watchOverSSH runs `blauth-helper watch --json` on the remote side until it has printed two
// different tokens (the first, and the background refresh), then stops it as a user would
// (SIGTERM) and returns the tokens.
func watchOverSSH(t *testing.T, s *sshd, remoteSock string) []string {
	mark := "BLAUTH_E2E_WATCH=" + strconv.FormatInt(time.Now().UnixNano(), 36)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", s.config, "remote",
		fmt.Sprintf("env %s %s=%s BLAUTH_NO_SPAWN=1 %s watch --json", mark, ipc.SocketEnv, remoteSock, suite.bins.Helper))
	cmd.Env = baseEnv("HOME=" + s.dir)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testkit.SyncBuffer{}
	cmd.Stderr = stderr
	t1 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var tokens []string
	var at []time.Duration
	lines := make(chan string)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(45 * time.Second)
read:
	for len(tokens) < 2 {
		select {
		case l, ok := <-lines:
			if !ok {
				break read
			}
			var m struct {
				Token, Workspace string
			}
			if err := json.Unmarshal([]byte(l), &m); err != nil || m.Token == "" || m.Workspace != "acme" {
				t.Errorf("watch printed %q", l)
				continue
			}
			if len(tokens) == 0 || tokens[len(tokens)-1] != m.Token {
				tokens = append(tokens, m.Token)
				at = append(at, time.Since(t1))
			}
		case <-timeout:
			break read
		}
	}
	// The watching helper runs on the "remote" host (this machine): stop it as its user would.
	pids, _ := e2etest.ProcsWithEnv(mark)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	go func() {
		for range lines {
		}
	}()
	err = cmd.Wait()
	wg.Wait()
	if len(tokens) < 2 {
		t.Fatalf("the remote watch printed %d token(s) within 45 s, want the first and a refresh (ssh: %v)\n%s", len(tokens), err, stderr.String())
	}
	if len(pids) != 1 {
		t.Errorf("found %d remote watch processes to stop, want 1", len(pids))
	}
	if err != nil {
		t.Errorf("the remote watch did not end cleanly on SIGTERM: %v\n%s", err, stderr.String())
	}
	t.Logf("FIGURES watch over ssh: first token after %s, the refreshed one after %s", at[0].Round(time.Millisecond), at[1].Round(time.Millisecond))
	return tokens
}
