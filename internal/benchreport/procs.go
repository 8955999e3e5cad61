package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a long-lived child process (blauthd, the bare server). Every proc is registered with
// its bench and stopped by bench.close, whatever happened.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // file holding its stdout and stderr
	done chan struct{}
	err  error // Wait's error, once done is closed
}

// startProc starts bin with args, env and dir, its output going to logPath.
func startProc(name, logPath string, env []string, dir, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, dir, lf, lf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end with SIGTERM and kills it after 5 seconds.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail returns the last lines of the process's output, for error messages.
func (p *proc) logTail() string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// procs is the registry bench.close stops in reverse order.
type procs struct {
	mu   sync.Mutex
	list []*proc
}

func (r *procs) add(p *proc) {
	r.mu.Lock()
	r.list = append(r.list, p)
	r.mu.Unlock()
}

func (r *procs) stopAll() {
	r.mu.Lock()
	list := r.list
	r.list = nil
	r.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop()
	}
}

// waitSocket waits until something answers on a Unix socket, or p exits, or the time is up.
func waitSocket(ctx context.Context, p *proc, socket string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("unix", socket, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before listening: %v\n%s", p.name, p.err, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after %s: %w\n%s", p.name, socket, within, err, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// rawConn is a client connection that speaks the wire format with as little work as it can,
// so that the load generator measures the server and not itself.
type rawConn struct {
	c net.Conn
	r *bufio.Reader
}

// dialRaw connects to socket, retrying while the listen backlog is full.
func dialRaw(socket string) (*rawConn, error) {
	var err error
	for try := 0; try < 50; try++ {
		var c net.Conn
		c, err = net.DialTimeout("unix", socket, 5*time.Second)
		if err == nil {
			return &rawConn{c: c, r: bufio.NewReaderSize(c, 4096)}, nil
		}
		if !errors.Is(err, syscall.EAGAIN) {
			break
		}
		time.Sleep(time.Duration(try+1) * time.Millisecond)
	}
	return nil, err
}

// do sends req (a whole request, empty line included) and reads one answer. It returns the
// answer's size and whether it was an error answer.
func (rc *rawConn) do(req []byte) (size int, failed bool, err error) {
	if _, err := rc.c.Write(req); err != nil {
		return 0, false, err
	}
	for {
		line, err := rc.r.ReadSlice('\n')
		if err != nil {
			return size, failed, err
		}
		size += len(line)
		if len(line) == 1 {
			return size, failed, nil
		}
		if len(line) > 7 && string(line[:7]) == "status=" && string(line[7:len(line)-1]) != "ok" {
			failed = true
		}
	}
}

func (rc *rawConn) close() { rc.c.Close() }

// memStatus is a process's memory from /proc/PID/status.
type memStatus struct {
	RSS, HWM int64 // KiB: VmRSS and VmHWM
}

func (m memStatus) rssMiB() float64 { return float64(m.RSS) / 1024 }
func (m memStatus) hwmMiB() float64 { return float64(m.HWM) / 1024 }

// parseStatus reads VmRSS and VmHWM from the text of /proc/PID/status.
func parseStatus(text string) (memStatus, error) {
	var m memStatus
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.RSS = n
		case "VmHWM":
			m.HWM = n
		}
	}
	if m.RSS == 0 {
		return m, errors.New("no VmRSS line")
	}
	return m, nil
}
