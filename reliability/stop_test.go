//go:build reliability

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/clients/go/blauth"
)

// stopQuiet is how long nothing may start a daemon after a stop, with every follower running.
const stopQuiet = 10 * time.Second

// followers records the tokens each follower reports, for the test to wait on.
type followers struct {
	mu   sync.Mutex
	seen map[string]map[string]bool // follower → tokens it reported
	errs strings.Builder            // what the followers wrote on stderr, for a failure's log
}

func (f *followers) saw(who, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen[who] == nil {
		f.seen[who] = map[string]bool{}
	}
	f.seen[who][token] = true
}

// waitAll waits until every one of who has reported token.
func (f *followers) waitAll(t *testing.T, token string, who []string) {
	t.Helper()
	missing := func() []string {
		f.mu.Lock()
		defer f.mu.Unlock()
		var m []string
		for _, w := range who {
			if !f.seen[w][token] {
				m = append(m, w)
			}
		}
		return m
	}
	if !waitFor(60*time.Second, 50*time.Millisecond, func() bool { return len(missing()) == 0 }) {
		f.mu.Lock()
		defer f.mu.Unlock()
		t.Fatalf("after 60 s, %v have not got the daemon's token; their stderr:\n%s", missing(), f.errs.String())
	}
}

// start runs a follower process whose every stdout line is a token it holds.
func (f *followers) start(t *testing.T, who string, cmd *exec.Cmd) io.WriteCloser {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &lockedWriter{f: f, prefix: who + ": "}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", who, err)
	}
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f.saw(who, strings.TrimSpace(sc.Text()))
		}
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		stdin.Close()
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("%s did not end on SIGTERM", who)
		}
		<-done
	})
	return stdin
}

type lockedWriter struct {
	f      *followers
	prefix string
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	w.f.errs.WriteString(w.prefix)
	w.f.errs.Write(p)
	return len(p), nil
}

// daemonsOn lists the blauthd processes serving socket.
func daemonsOn(socket string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "blauthd" && strings.Contains(string(raw), socket) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// After 'blauth-helper stop', nothing that only follows a daemon starts one: a
// 'blauth-helper watch', the Go, Node and Python clients and blauth-proxy's MCP bridge keep
// running for 10 s with no blauthd at all; then the user's next 'blauth-helper token' starts
// one, and every follower takes its token by itself.
func TestReliabilityStopSticks(t *testing.T) {
	proxyBin := buildProxy(t)
	dir := shortDir(t)
	home := filepath.Join(dir, "home")
	socket := filepath.Join(dir, "run", "blauthd.sock")
	blPath := filepath.Join(home, ".blaxel", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(blPath), 0o700); err != nil {
		t.Fatal(err)
	}
	key1, key2 := "stop-key-1-"+randHex(8), "stop-key-2-"+randHex(8)
	run.secret("API key", key1)
	run.secret("API key", key2)
	writeKey := func(key string) {
		t.Helper()
		cfg := "context:\n  workspace: acme\nworkspaces:\n- name: acme\n  credentials:\n    apiKey: \"" + key + "\"\ntracking: false\n"
		if err := os.WriteFile(blPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKey(key1)
	// What the user's shell holds: no BL_* variable, spawning allowed.
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "BLAUTH_SOCKET=" + socket, "TZ=UTC", "LANG=C"}
	helper := func(args ...string) helperResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, helperBin, args...)
		cmd.Env, cmd.Dir = env, home
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		_ = cmd.Run()
		r := helperResult{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
		recordHelperStderr(r.stderr)
		return r
	}
	t.Cleanup(func() {
		for _, pid := range daemonsOn(socket) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		if !waitFor(30*time.Second, 20*time.Millisecond, func() bool { return len(daemonsOn(socket)) == 0 }) {
			t.Errorf("blauthd still runs on %s after SIGTERM", socket)
		}
		keepSpawnedLog(t, filepath.Join(dir, "run", "blauthd.log"))
	})

	if r := helper("token"); r.code != 0 || strings.TrimSpace(r.stdout) != key1 || !strings.Contains(r.stderr, "started blauthd") {
		t.Fatalf("the first token, which starts a daemon: %+v", r)
	}

	fl := &followers{seen: map[string]map[string]bool{}}
	follower := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		cmd.Env, cmd.Dir = env, home
		return cmd
	}
	fl.start(t, "watch", follower(helperBin, "watch"))
	fl.start(t, "node", follower("node", "-e", `
const blauth = require(process.argv[1]);
const w = blauth.watch({ env: {} });
w.on("token", (t) => console.log(t.token));
w.on("error", (e) => console.error(e.code, e.message));
process.on("SIGTERM", () => w.close());
`, filepath.Join(moduleRoot, "clients", "node")))
	py := follower("python3", "-c", `
import signal, sys
sys.path.insert(0, sys.argv[1])
import blauth
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
w = blauth.watch(env={})
while True:
    try:
        tok = next(w)
    except blauth.BlauthError as e:
        print(e.code, e.message, file=sys.stderr, flush=True)
        continue
    print(tok.token, flush=True)
`, filepath.Join(moduleRoot, "clients", "python"))
	py.Env = append(py.Env, "PYTHONDONTWRITEBYTECODE=1")
	fl.start(t, "python", py)
	// blauth-proxy's MCP bridge sends a notification every 100 ms; the MCP server notes the
	// token each one carries.
	mcp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			fl.saw("blauth-proxy", tok)
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer mcp.Close()
	bridgeIn := fl.start(t, "blauth-proxy", follower(proxyBin, "mcp", mcp.URL))
	poking := make(chan struct{})
	defer close(poking)
	go func() {
		for {
			select {
			case <-poking:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := io.WriteString(bridgeIn, `{"jsonrpc":"2.0","method":"notifications/progress","params":{}}`+"\n"); err != nil {
				return
			}
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts, err := blauth.NewTokenSource(ctx, blauth.Options{Socket: socket, Dir: home, Env: []string{}})
	if err != nil {
		t.Fatalf("the Go client: %v", err)
	}
	defer ts.Close()
	go func() {
		for ctx.Err() == nil {
			if tok, err := ts.Token(); err == nil {
				fl.saw("go", tok.AccessToken)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	all := []string{"watch", "node", "python", "blauth-proxy", "go"}
	fl.waitAll(t, key1, all)

	r := helper("stop")
	if r.code != 0 || !strings.Contains(r.stderr, "will not start again until a command needs it") {
		t.Fatalf("stop: %+v", r)
	}
	writeKey(key2) // what the next daemon will serve
	for end := time.Now().Add(stopQuiet); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if pids := daemonsOn(socket); len(pids) > 0 {
			t.Fatalf("%s after the stop, blauthd runs again (pids %v), started by a follower; their stderr:\n%s",
				stopQuiet-time.Until(end).Round(time.Millisecond), pids, fl.stderr())
		}
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatalf("the socket is back after the stop: %v", err)
	}

	if r := helper("token"); r.code != 0 || strings.TrimSpace(r.stdout) != key2 || !strings.Contains(r.stderr, "started blauthd") {
		t.Fatalf("the next token, which starts a daemon again: %+v", r)
	}
	fl.waitAll(t, key2, all)
	if pids := daemonsOn(socket); len(pids) != 1 {
		t.Errorf("blauthd processes on the socket: %v, want the one 'token' started", pids)
	}
	t.Logf("followers' stderr:\n%s", fl.stderr())
}

func (f *followers) stderr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errs.String()
}

var proxyOnce struct {
	sync.Once
	path string
	err  error
}

// buildProxy builds blauth-proxy beside the suite's other binaries, once.
func buildProxy(t *testing.T) string {
	t.Helper()
	proxyOnce.Do(func() {
		build := exec.Command("go", "build", "-trimpath", "-o", binDir+string(filepath.Separator), "./cmd/blauth-proxy")
		build.Dir = moduleRoot
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			proxyOnce.err = fmt.Errorf("build blauth-proxy: %v\n%s", err, out)
		}
		proxyOnce.path = filepath.Join(binDir, "blauth-proxy")
	})
	if proxyOnce.err != nil {
		t.Fatal(proxyOnce.err)
	}
	return proxyOnce.path
}

// keepSpawnedLog copies the log of a daemon the helper started into the run's logs, which the
// last case searches for secrets.
func keepSpawnedLog(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("the spawned daemon's log: %v", err)
		return
	}
	_, f := logFile(t, "spawned-blauthd")
	defer f.Close()
	_, _ = f.Write(data)
}
