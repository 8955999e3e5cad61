//go:build reliability

package reliability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
)

// The real `blauth-proxy mcp` against a hostile MCP server on loopback. The bridge's bound is
// 2 s from the end of stdin or a signal (docs/IDE.md); a bridge that ignores the end never
// exits, so the wait for its exit is a generous deadline that only a hang reaches.
const (
	mcpEndBound  = 2 * time.Second
	mcpExitWait  = 10 * mcpEndBound
	mcpPeakBound = 64 << 10 // KiB of VmHWM while a 200 MiB answer passes
	mcpHugeBytes = 200 << 20
)

const mcpInit = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"rel","version":"1"}}}`

// hostileMCPServer answers as mode says: "silent" never answers initialize; "stream" answers
// initialize, then every call with an event stream that never ends; "huge" answers
// initialize, then a call named "huge" with a JSON body of 200 MiB made on the fly, and any
// other call at once. posted receives (without blocking the server) once per POST read.
func hostileMCPServer(t *testing.T, mode string) (srv *httptest.Server, posted <-chan struct{}) {
	t.Helper()
	release := make(chan struct{})
	post := make(chan struct{}, 1)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		_ = json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m)
		select {
		case post <- struct{}{}:
		default:
		}
		hold := func() {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}
		switch {
		case mode == "silent":
			hold()
		case m.Method == "initialize":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"hostile","version":"1"}}}`, m.ID)
		case len(m.ID) == 0:
			w.WriteHeader(http.StatusAccepted)
		case mode == "stream":
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			for i := 0; ; i++ {
				select {
				case <-r.Context().Done():
					return
				case <-release:
					return
				default:
				}
				if _, err := fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":%d}}\n\n", i); err != nil {
					return
				}
				if rc.Flush() != nil {
					return
				}
			}
		case mode == "huge" && m.Params.Name == "huge":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"blob":"`, m.ID)
			chunk := strings.Repeat("x", 64<<10)
			for sent := 0; sent < mcpHugeBytes && r.Context().Err() == nil; sent += len(chunk) {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
			fmt.Fprint(w, `"}}`)
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"ok":true}}`, m.ID)
		}
	}))
	t.Cleanup(func() {
		close(release)
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv, post
}

// mcpBridge is one `blauth-proxy mcp` process.
type mcpBridge struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	done   chan struct{}
	stderr strings.Builder // written by the process only until done
	mu     sync.Mutex
	lines  []string      // what it wrote to stdout, when read
	more   chan struct{} // a line came
}

// startMCPBridge runs the bridge on url against d's socket. With readOut false nobody reads
// its stdout: a client that stopped reading.
func startMCPBridge(t *testing.T, d *daemon, url string, readOut bool) *mcpBridge {
	t.Helper()
	b := &mcpBridge{done: make(chan struct{}), more: make(chan struct{}, 1)}
	b.cmd = exec.Command(buildProxy(t), "mcp", url)
	b.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + d.home, "BLAUTH_SOCKET=" + d.socket, "TZ=UTC", "LANG=C"}
	b.cmd.Dir = d.home
	b.cmd.Stderr = &b.stderr
	var err error
	if b.stdin, err = b.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b.cmd.Stdout = outW
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start blauth-proxy mcp: %v", err)
	}
	outW.Close()
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	if readOut {
		go func() {
			sc := bufio.NewScanner(outR)
			sc.Buffer(nil, 8<<20)
			for sc.Scan() {
				b.mu.Lock()
				b.lines = append(b.lines, sc.Text())
				b.mu.Unlock()
				select {
				case b.more <- struct{}{}:
				default:
				}
			}
		}()
	}
	t.Cleanup(func() {
		if !b.exited() {
			_ = b.cmd.Process.Kill()
			<-b.done
		}
		outR.Close()
		if t.Failed() {
			t.Logf("blauth-proxy mcp's stderr:\n%s", b.stderr.String())
		}
	})
	return b
}

func (b *mcpBridge) send(t *testing.T, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(b.stdin, l+"\n"); err != nil {
			t.Fatalf("writing to the bridge: %v", err)
		}
	}
}

func (b *mcpBridge) exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// waitID waits for the bridge's answer to id (its JSON form).
func (b *mcpBridge) waitID(t *testing.T, id string) map[string]json.RawMessage {
	t.Helper()
	deadline := time.After(mcpExitWait)
	for {
		b.mu.Lock()
		for _, l := range b.lines {
			var m map[string]json.RawMessage
			if json.Unmarshal([]byte(l), &m) == nil && string(m["id"]) == id {
				b.mu.Unlock()
				return m
			}
		}
		b.mu.Unlock()
		select {
		case <-b.more:
		case <-b.done:
			t.Fatalf("the bridge exited (%v) without answering id %s", b.cmd.ProcessState, id)
		case <-deadline:
			t.Fatalf("no answer for id %s", id)
		}
	}
}

// end ends the bridge as how says and waits for it to exit; it returns the exit status.
func (b *mcpBridge) end(t *testing.T, how string) int {
	t.Helper()
	switch how {
	case "stdin EOF":
		b.stdin.Close()
	case "SIGTERM":
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
	case "SIGINT":
		_ = b.cmd.Process.Signal(syscall.SIGINT)
	default:
		t.Fatalf("no end %q", how)
	}
	start := time.Now()
	select {
	case <-b.done:
	case <-time.After(mcpExitWait):
		t.Fatalf("blauth-proxy mcp still runs %s after %s (its bound is %s)", mcpExitWait, how, mcpEndBound)
	}
	t.Logf("exited %s after %s, status %d", time.Since(start).Round(time.Millisecond), how, b.cmd.ProcessState.ExitCode())
	return b.cmd.ProcessState.ExitCode()
}

// peakKiB is the process's VmHWM, its peak resident set so far.
func peakKiB(t *testing.T, pid int) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, err := strconv.Atoi(f[0])
				if err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

func mcpDaemon(t *testing.T) *daemon {
	t.Helper()
	base := shortDir(t)
	home := filepath.Join(base, "home")
	blPath := filepath.Join(home, ".blaxel", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(blPath), 0o700); err != nil {
		t.Fatal(err)
	}
	key := "mcp-key-" + randHex(8)
	run.secret("API key", key)
	if err := os.WriteFile(blPath, []byte(blConfigKey("mcp-ws", key)), 0o600); err != nil {
		t.Fatal(err)
	}
	return startDaemon(t, daemonOpts{home: home, socket: filepath.Join(base, "run", "blauthd.sock")})
}

// TestReliabilityMCPBridgeEnds: the real bridge exits, with the status docs/IDE.md states, on
// the end of its stdin, SIGTERM and SIGINT, while the MCP server never answers initialize, or
// streams an answer for ever to a client that reads stdout or to one that stopped reading it.
func TestReliabilityMCPBridgeEnds(t *testing.T) {
	d := mcpDaemon(t)
	for _, c := range []struct {
		mode    string
		readOut bool
		want    int // the exit status
	}{
		{"silent", true, 0},
		{"stream", true, 0},
		{"stream", false, 1}, // stdout could not be written
	} {
		for _, how := range []string{"stdin EOF", "SIGTERM", "SIGINT"} {
			name := fmt.Sprintf("%s, stdout read %v, %s", c.mode, c.readOut, how)
			t.Run(name, func(t *testing.T) {
				srv, posted := hostileMCPServer(t, c.mode)
				b := startMCPBridge(t, d, srv.URL+"/mcp", c.readOut)
				b.send(t, mcpInit)
				if c.mode == "silent" {
					// The initialize reached the server, which holds it.
					select {
					case <-posted:
					case <-b.done:
						t.Fatalf("the bridge exited (%v) before sending initialize", b.cmd.ProcessState)
					case <-time.After(mcpExitWait):
						t.Fatalf("the initialize never reached the server")
					}
				}
				if c.mode == "stream" {
					if c.readOut {
						b.waitID(t, "1")
					}
					b.send(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
						`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}`)
					if c.readOut {
						// The stream is flowing: wait for a notification of it.
						b.waitLine(t, "notifications/progress")
					} else {
						b.waitBlocked(t)
					}
				}
				if got := b.end(t, how); got != c.want {
					t.Errorf("exit status %d after %s, want %d", got, how, c.want)
				}
				if c.want == 1 && !strings.Contains(b.stderr.String(), "stdout") {
					t.Errorf("the bridge did not say that stdout was not read: %q", b.stderr.String())
				}
			})
		}
	}
}

// TestReliabilityMCPBridgeHugeAnswer: a 200 MiB answer is never held: the client gets a
// JSON-RPC error for that request's id naming the 4 MiB limit, the next request is answered,
// and the bridge's peak resident set stays under 64 MiB.
func TestReliabilityMCPBridgeHugeAnswer(t *testing.T) {
	d := mcpDaemon(t)
	srv, _ := hostileMCPServer(t, "huge")
	b := startMCPBridge(t, d, srv.URL+"/mcp", true)
	b.send(t, mcpInit)
	b.waitID(t, "1")
	b.send(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":"big-7","method":"tools/call","params":{"name":"huge"}}`)
	got := b.waitID(t, `"big-7"`)
	var rpcErr struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(got["error"], &rpcErr); err != nil || rpcErr.Code != -32000 || !strings.Contains(rpcErr.Message, "4194304-byte limit") {
		t.Errorf("the huge answer came as %v, want a JSON-RPC error -32000 naming the 4194304-byte limit", got)
	}
	b.send(t, `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"small"}}`)
	if small := b.waitID(t, "8"); string(small["result"]) != `{"ok":true}` {
		t.Errorf("the call after the huge answer: %v", small)
	}
	peak := peakKiB(t, b.cmd.Process.Pid)
	t.Logf("peak resident set (VmHWM) with a %d MiB answer: %s", mcpHugeBytes>>20, mib(peak))
	if peak > mcpPeakBound {
		t.Errorf("the bridge's peak resident set was %s, over %s", mib(peak), mib(mcpPeakBound))
	}
	if code := b.end(t, "stdin EOF"); code != 0 {
		t.Errorf("exit status %d after stdin EOF, want 0", code)
	}
}

// waitLine waits for a line of stdout holding s.
func (b *mcpBridge) waitLine(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(mcpExitWait)
	for {
		b.mu.Lock()
		for _, l := range b.lines {
			if strings.Contains(l, s) {
				b.mu.Unlock()
				return
			}
		}
		b.mu.Unlock()
		select {
		case <-b.more:
		case <-b.done:
			t.Fatalf("the bridge exited (%v) before writing %s", b.cmd.ProcessState, s)
		case <-deadline:
			t.Fatalf("the bridge never wrote %s", s)
		}
	}
}

// waitBlocked waits until one of the bridge's threads is blocked writing to its unread stdout,
// as the kernel tells in /proc/PID/task/TID: waiting in a pipe write (wchan), or in the write
// system call on fd 1 (syscall, on amd64).
func (b *mcpBridge) waitBlocked(t *testing.T) {
	t.Helper()
	pid := b.cmd.Process.Pid
	if !waitFor(mcpExitWait, 10*time.Millisecond, func() bool {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			dir := fmt.Sprintf("/proc/%d/task/%s/", pid, task.Name())
			w, _ := os.ReadFile(dir + "wchan")
			sc, _ := os.ReadFile(dir + "syscall")
			if strings.Contains(string(w), "pipe_write") || (runtime.GOARCH == "amd64" && strings.HasPrefix(string(sc), "1 0x1 ")) {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the bridge never blocked on its unread stdout")
	}
}
