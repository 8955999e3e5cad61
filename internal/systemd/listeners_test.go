//go:build unix

package systemd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv, when set, makes the test binary act as a socket-activated
// daemon instead of running the tests: see TestMain.
const childEnv = "BLAUTH_SYSTEMD_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "setpid":
		// The parent cannot know our pid before it starts us: set
		// LISTEN_PID ourselves, as systemd's exec code does after fork.
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		fallthrough
	default:
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// child takes the passed listeners, checks what Listeners promises, then
// serves one connection per listener: it writes the listener's name and
// what it found back to the client.
func child() error {
	ls, err := Listeners()
	if err != nil {
		fmt.Printf("error: %v\n", err)
		return nil
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if val, ok := os.LookupEnv(v); ok {
			return fmt.Errorf("%s=%s still set after Listeners", v, val)
		}
	}
	if len(ls) == 0 {
		fmt.Println("none")
		return nil
	}
	fmt.Printf("listeners %d\n", len(ls))
	for i, l := range ls {
		// Look at the listener's own descriptor: File() would return a
		// duplicate, always close-on-exec.
		rc, err := l.(syscallConner).SyscallConn()
		if err != nil {
			return err
		}
		var flags int
		var fcntlErr error
		if err := rc.Control(func(fd uintptr) { flags, fcntlErr = fcntlGetFD(int(fd)) }); err != nil {
			return err
		}
		if fcntlErr != nil {
			return fcntlErr
		}
		c, err := l.Accept()
		if err != nil {
			return fmt.Errorf("accept on listener %d: %w", i, err)
		}
		fmt.Fprintf(c, "listener %d on %s cloexec=%v\n", i, l.Addr(), flags&syscall.FD_CLOEXEC != 0)
		c.Close()
		l.Close()
	}
	return nil
}

type syscallConner interface {
	SyscallConn() (syscall.RawConn, error)
}

func fcntlGetFD(fd int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// startChild runs the test binary as a socket-activated child with files
// at descriptors 3 and up, and returns its first line of output.
func startChild(t *testing.T, mode string, env []string, files ...*os.File) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(cleanEnv(), childEnv+"="+mode)
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	cmd.Stderr = &testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewReader(out)
}

// cleanEnv is the test's environment without the variables the child
// must get only from the test case.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, childEnv+"=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("child stderr: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// readLine reads one line of the child's output within a bounded time.
func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := r.ReadString('\n')
		ch <- result{strings.TrimSuffix(line, "\n"), err}
	}()
	select {
	case res := <-ch:
		if res.err != nil && res.line == "" {
			t.Fatalf("read child output: %v", res.err)
		}
		return res.line
	case <-time.After(30 * time.Second):
		t.Fatal("child wrote nothing within 30 s")
		return ""
	}
}

// listenUnix creates a listening socket and returns it as a file to pass
// to a child, the way systemd holds the socket of a .socket unit.
func listenUnix(t *testing.T, path string) *os.File {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	t.Cleanup(func() { f.Close() })
	return f
}

// dialRead connects to path and returns what the server writes.
func dialRead(t *testing.T, network, addr string) string {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return strings.TrimSuffix(string(b), "\n")
}

func waitChild(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("child: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("child did not exit within 30 s")
	}
}

func TestListenersInChild(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "blauthd.sock")
	cmd, out := startChild(t, "setpid", []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=blauthd.sock"}, listenUnix(t, sock))
	if got := readLine(t, out); got != "listeners 1" {
		t.Fatalf("child said %q, want %q", got, "listeners 1")
	}
	want := "listener 0 on " + sock + " cloexec=true"
	if got := dialRead(t, "unix", sock); got != want {
		t.Errorf("served %q, want %q", got, want)
	}
	waitChild(t, cmd)
}

func TestListenersSeveralInOrder(t *testing.T) {
	dir := t.TempDir()
	unixSock := filepath.Join(dir, "a.sock")
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tcpFile, err := tcp.File()
	if err != nil {
		t.Fatal(err)
	}
	tcpAddr := tcp.Addr().String()
	tcp.Close()
	defer tcpFile.Close()

	cmd, out := startChild(t, "setpid", []string{"LISTEN_FDS=2"}, listenUnix(t, unixSock), tcpFile)
	if got := readLine(t, out); got != "listeners 2" {
		t.Fatalf("child said %q, want %q", got, "listeners 2")
	}
	if got, want := dialRead(t, "unix", unixSock), "listener 0 on "+unixSock+" cloexec=true"; got != want {
		t.Errorf("served %q, want %q", got, want)
	}
	if got, want := dialRead(t, "tcp", tcpAddr), "listener 1 on "+tcpAddr+" cloexec=true"; got != want {
		t.Errorf("served %q, want %q", got, want)
	}
	waitChild(t, cmd)
}

func TestListenersNotForUs(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "blauthd.sock")
	f := listenUnix(t, sock)
	tests := []struct {
		name string
		env  []string
	}{
		{"other pid", []string{"LISTEN_PID=1", "LISTEN_FDS=1"}},
		{"no pid", []string{"LISTEN_FDS=1"}},
		{"no fds", []string{"LISTEN_PID=1"}},
		{"nothing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each child is a fresh test binary: slow under -race
			cmd, out := startChild(t, "keep", tt.env, f)
			if got := readLine(t, out); got != "none" {
				t.Errorf("child said %q, want none", got)
			}
			waitChild(t, cmd)
		})
	}
	t.Run("zero fds", func(t *testing.T) {
		t.Parallel()
		cmd, out := startChild(t, "setpid", []string{"LISTEN_FDS=0"})
		if got := readLine(t, out); got != "none" {
			t.Errorf("child said %q, want none", got)
		}
		waitChild(t, cmd)
	})
}

func TestListenersRejectsBadDescriptors(t *testing.T) {
	regular, err := os.Create(filepath.Join(t.TempDir(), "not-a-socket"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { regular.Close() })
	sock := filepath.Join(t.TempDir(), "blauthd.sock")
	dgramConn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "dgram"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	dgram, err := dgramConn.File()
	if err != nil {
		t.Fatal(err)
	}
	dgramConn.Close()
	t.Cleanup(func() { dgram.Close() })
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	connected := os.NewFile(uintptr(pair[0]), "connected")
	t.Cleanup(func() { connected.Close(); syscall.Close(pair[1]) })
	tests := []struct {
		name  string
		env   []string
		files []*os.File
		want  string
	}{
		{"regular file", []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=conf"}, []*os.File{regular}, "file descriptor 3 (conf) is not a socket"},
		{"datagram socket", []string{"LISTEN_FDS=1"}, []*os.File{dgram}, "file descriptor 3 (LISTEN_FD_3) is not a listening stream socket"},
		{"connected socket", []string{"LISTEN_FDS=1"}, []*os.File{connected}, "not listening"},
		{"more fds than passed", []string{"LISTEN_FDS=2"}, []*os.File{listenUnix(t, sock)}, "file descriptor 4"},
		{"malformed count", []string{"LISTEN_FDS=one"}, nil, "is not a count"},
		{"negative count", []string{"LISTEN_FDS=-1"}, nil, "is not a count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd, out := startChild(t, "setpid", tt.env, tt.files...)
			got := readLine(t, out)
			if !strings.HasPrefix(got, "error: systemd: socket activation: ") || !strings.Contains(got, tt.want) {
				t.Errorf("child said %q, want an error containing %q", got, tt.want)
			}
			waitChild(t, cmd)
		})
	}
}

func TestListenersMalformedPID(t *testing.T) {
	t.Setenv("LISTEN_PID", "self")
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "x")
	ls, err := Listeners()
	if err == nil || ls != nil {
		t.Fatalf("Listeners() = %v, %v; want an error", ls, err)
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(v); ok {
			t.Errorf("%s still set", v)
		}
	}
}

// TestListenersUnderSystemdSocketActivate runs the child under the real
// systemd-socket-activate, which creates the socket, waits for the first
// connection and execs the child with LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES set.
func TestListenersUnderSystemdSocketActivate(t *testing.T) {
	ssa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		// CI installs it (.ci/install-deps.sh): there, its absence is a failure, not a skip.
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-socket-activate is not installed: run .ci/install-deps.sh")
		}
		t.Skip("systemd-socket-activate is not installed (.ci/install-deps.sh installs it)")
	}
	sock := filepath.Join(t.TempDir(), "blauthd.sock")
	cmd := exec.Command(ssa, "-l", sock, "--fdname=blauthd.sock", "-E", childEnv+"=keep", os.Args[0], "-test.run=^$")
	cmd.Env = cleanEnv()
	cmd.Stderr = &testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Wait, bounded, for the socket to take connections: the file exists once it is bound,
	// a moment before it listens (a connect in between is refused).
	deadline := time.Now().Add(30 * time.Second)
	var c net.Conn
	for {
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate did not listen on the socket within 30 s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", sock, err)
	}
	want := "listener 0 on " + sock + " cloexec=true"
	if got := strings.TrimSuffix(string(b), "\n"); got != want {
		t.Errorf("served %q, want %q", got, want)
	}
	if got := readLine(t, bufio.NewReader(out)); got != "listeners 1" {
		t.Errorf("child said %q, want listeners 1", got)
	}
	waitChild(t, cmd)
}
