//go:build reliability

package reliability

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var proxyBuild struct {
	once sync.Once
	path string
	err  error
}

// proxyBinary builds blauth-proxy once for the run, beside the other binaries.
func proxyBinary(t *testing.T) string {
	t.Helper()
	proxyBuild.once.Do(func() {
		out := filepath.Join(binDir, "blauth-proxy")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=reliability", "-o", out, "./cmd/blauth-proxy")
		cmd.Dir = moduleRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			proxyBuild.err = fmt.Errorf("building blauth-proxy: %v\n%s", err, b)
			return
		}
		proxyBuild.path = out
	})
	if proxyBuild.err != nil {
		t.Fatal(proxyBuild.err)
	}
	return proxyBuild.path
}

// proxyRun is one `blauth-proxy exec` whose child prints BL_RUN_URL and BL_API_KEY and then
// lives until its stdin closes.
type proxyRun struct {
	pid     int
	runURL  string
	secret  string
	logPath string
	stop    func() // closes the child's stdin and waits for the proxy to exit
}

func startProxyRun(t *testing.T, d *daemon, runBase string) *proxyRun {
	t.Helper()
	logPath, lf := logFile(t, "blauth-proxy")
	defer lf.Close()
	cmd := exec.Command(proxyBinary(t), "exec", "--", "sh", "-c", `printf '%s %s\n' "$BL_RUN_URL" "$BL_API_KEY"; exec cat >/dev/null`)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + d.home, "BLAUTH_SOCKET=" + d.socket, "BL_RUN_URL=" + runBase}
	cmd.Dir = shortDir(t)
	cmd.Stderr = lf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			stdin.Close()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Errorf("blauth-proxy did not exit within 15 s of its child's stdin closing")
				_ = cmd.Process.Signal(syscall.SIGKILL)
				<-done
			}
		})
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(stop)
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatalf("the child of blauth-proxy printed nothing within 30 s:\n%s", tail(logPath, 20))
	}
	runURL, secret, ok := strings.Cut(line, " ")
	if !ok || secret == "" {
		t.Fatalf("the child printed %q:\n%s", line, tail(logPath, 20))
	}
	run.secret("proxy secret", secret)
	return &proxyRun{pid: cmd.Process.Pid, runURL: runURL, secret: secret, logPath: logPath, stop: stop}
}

// peakRSS is VmHWM, the most resident memory the process has had, in KiB.
func peakRSS(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// TestReliabilityProxyWithoutTheSecret: a local process without the proxy's secret opens
// 1000 idle connections, 256 with an unfinished 1 MiB header, 256 with an unfinished 60 KiB
// header, and sends 500 requests with a wrong key. The real blauth-proxy stays under 64 MiB
// at its peak and holds a bounded number of connections, the child's requests with the secret
// (on its kept connection and on new ones) are answered throughout, and the proxy's stderr
// holds a few summary lines, not one per connection or request.
func TestReliabilityProxyWithoutTheSecret(t *testing.T) {
	const ws = "proxy-ws"
	api := newFakeAPI(t, time.Hour)
	key := "bl-rel-proxy-" + randHex(12)
	api.AddAPIKey(key, ws)
	run.secret("API key", key)
	d := startDaemon(t, daemonOpts{api: api, env: []string{"BL_WORKSPACE=" + ws, "BL_API_KEY=" + key}})
	var upHits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upHits.Add(1)
		if r.Header.Get("X-Blaxel-Authorization") != "Bearer "+key {
			http.Error(w, "wrong token", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "run ok\n")
	}))
	t.Cleanup(up.Close)
	p := startProxyRun(t, d, up.URL)
	addr := strings.TrimSuffix(strings.TrimPrefix(p.runURL, "http://"), "/run")

	child := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}, Timeout: 30 * time.Second}
	defer child.CloseIdleConnections()
	childGet := func(c *http.Client, path string) error {
		req, _ := http.NewRequest(http.MethodGet, p.runURL+path, nil)
		req.Header.Set("X-Blaxel-Authorization", "Bearer "+p.secret)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "run ok\n" {
			return fmt.Errorf("%d %q", resp.StatusCode, body)
		}
		return nil
	}
	if err := childGet(child, "/"+ws+"/agents/a"); err != nil {
		t.Fatalf("the child's first request: %v", err)
	}
	before, _ := readProc(p.pid)

	// The attack, all at once; every connection stays open until the end of the case.
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	hold := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return nil // the backlog is full: the attack is refused, which is fine
		}
		hold(c)
		return c
	}
	unfinished := func(n, size int) {
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := dial()
				if c == nil {
					return
				}
				_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.WriteString(c, "GET /run/"+ws+"/agents/a HTTP/1.1\r\nHost: p\r\nX-Big: "+strings.Repeat("a", size))
			}()
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			dial()
		}
	}()
	unfinished(256, 1<<20)
	unfinished(256, 60<<10)
	var refused, answered atomic.Int64 // 401s, and any other answer
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wrong := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
			for i := 0; i < 125; i++ {
				req, _ := http.NewRequest(http.MethodGet, p.runURL+"/"+ws+"/agents/a", nil)
				req.Header.Set("X-Blaxel-Authorization", "Bearer not-the-secret-"+strconv.Itoa(i))
				if resp, err := wrong.Do(req); err == nil {
					if resp.StatusCode == http.StatusUnauthorized {
						refused.Add(1)
					} else {
						answered.Add(1)
					}
					resp.Body.Close()
				}
			}
		}()
	}
	// The child keeps working on its kept connection while it goes on. (A new connection of
	// the child in the middle of the flood may be closed before its request is read, when more
	// than 128 others are accepted first: that is the price of the bound.)
	var childErrs []error
	childDone := make(chan struct{})
	go func() {
		defer close(childDone)
		for i := 0; i < 20; i++ {
			if err := childGet(child, fmt.Sprintf("/%s/agents/a/kept-%d", ws, i)); err != nil {
				childErrs = append(childErrs, fmt.Errorf("kept connection, request %d: %w", i, err))
			}
		}
	}()
	wg.Wait()
	<-childDone
	for _, err := range childErrs {
		t.Errorf("the child during the attack: %v", err)
	}
	during, _ := readProc(p.pid)
	mu.Lock()
	held := len(conns)
	mu.Unlock()
	// With the attack's connections still open, the child's new connections get in.
	for i := 0; i < 5; i++ {
		fresh := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
		if err := childGet(fresh, fmt.Sprintf("/%s/agents/a/new-%d", ws, i)); err != nil {
			t.Errorf("a new connection of the child after the flood, %d connections without the secret open: %v", held, err)
		}
		fresh.CloseIdleConnections()
	}
	if err := childGet(child, "/"+ws+"/agents/a/after"); err != nil {
		t.Errorf("the child's kept connection after the flood: %v", err)
	}
	peak, err := peakRSS(p.pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE proxy attack: %d connections opened without the secret, %d requests refused 401; proxy before %s, after %s, peak RSS %.1f MiB",
		held, refused.Load(), before, during, float64(peak)/1024)
	if peak > 64<<10 {
		t.Errorf("blauth-proxy's peak RSS is %.1f MiB, want under 64 MiB", float64(peak)/1024)
	}
	// 128 waiting connections at most, plus the child's, the listener, stdio, the daemon's watch.
	if during.FDs > 128+48 {
		t.Errorf("blauth-proxy holds %d fds with %d connections without the secret open, want at most %d", during.FDs, held, 128+48)
	}
	// A request with a wrong key is answered 401, or its connection is closed unanswered when
	// more than 128 others came in before it was read; never anything else.
	if answered.Load() != 0 || refused.Load() == 0 {
		t.Errorf("of the 500 requests with a wrong key, %d were answered 401 and %d otherwise", refused.Load(), answered.Load())
	}
	if n := upHits.Load(); n != 1+20+5+1 {
		t.Errorf("the upstream got %d requests, want the child's 27", n)
	}

	p.stop()
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	summary := false
	for _, l := range lines {
		if strings.Contains(l, "without the secret") {
			summary = true
		}
	}
	if len(lines) > 20 || !summary {
		t.Errorf("blauth-proxy wrote %d lines to stderr, want a summary in at most 20:\n%s", len(lines), tail(p.logPath, 10))
	} else {
		t.Logf("FIGURE proxy attack: %d stderr lines:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}
