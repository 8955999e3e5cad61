// Command e2eclient is the client that the systemd end-to-end suite (e2e/systemd) runs inside its
// container, where neither Go nor Python is installed: a static binary that speaks the socket
// protocol through package ipc, with time limits longer than blauth-helper's (a client queued on
// the socket while systemd restarts a hung daemon waits for half a minute), a loop that counts
// failures across an upgrade, and a bounded load generator.
//
//	e2eclient get  [-workspace W] [-timeout 60s]                  one token, printed on stdout
//	e2eclient loop [-workspace W] -until FILE [-max 5m] [-every 50ms]
//	e2eclient load [-workspace W] [-idle 500] [-workers 32] [-requests 20000] [-max 60s]
//
// loop and load print one JSON summary line on stdout: {"ok":N,"failed":N,"errors":[…],…}.
// The caller's BL_* variables and working directory are sent with every request, as
// blauth-helper sends them. The socket is -socket, else blauth-helper's default path.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blauth/blauth/ipc"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: e2eclient get|loop|load [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet("e2eclient "+mode, flag.ExitOnError)
	socket := fs.String("socket", ipc.DefaultSocketPath(), "the daemon's socket")
	workspace := fs.String("workspace", "", "the workspace to ask for (default: the caller's BL_WORKSPACE or the daemon's)")
	timeout := fs.Duration("timeout", 60*time.Second, "time limit of one request, connection included")
	until := fs.String("until", "", "loop: stop once this file exists")
	maxDur := fs.Duration("max", time.Minute, "loop, load: stop after this long at most")
	every := fs.Duration("every", 50*time.Millisecond, "loop: pause between requests")
	idle := fs.Int("idle", 500, "load: connections opened first and held idle")
	workers := fs.Int("workers", 32, "load: concurrent clients")
	requests := fs.Int("requests", 20000, "load: requests in all")
	_ = fs.Parse(os.Args[2:])

	c := client{socket: *socket, workspace: *workspace, timeout: *timeout}
	switch mode {
	case "get":
		tok, err := c.get(nil)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2eclient: error: %v\n", err)
			os.Exit(1)
		}
		fmt.Println(tok)
	case "loop":
		if *until == "" {
			fmt.Fprintln(os.Stderr, "e2eclient: error: loop needs -until FILE")
			os.Exit(2)
		}
		report(c.loop(*until, *maxDur, *every))
	case "load":
		report(c.load(*idle, *workers, *requests, *maxDur))
	default:
		fmt.Fprintf(os.Stderr, "e2eclient: error: unknown mode %q\n", mode)
		os.Exit(2)
	}
}

type client struct {
	socket, workspace string
	timeout           time.Duration
}

// request builds a get request the way blauth-helper does.
func (c client) request() *ipc.Message {
	m := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet)
	if c.workspace != "" {
		m.Add(ipc.KeyWorkspace, c.workspace)
	}
	if wd, err := os.Getwd(); err == nil {
		m.Add(ipc.KeyDir, wd)
	}
	env, err := ipc.CallerEnv(os.Environ())
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2eclient: %v\n", err)
		os.Exit(2)
	}
	m.Fields = append(m.Fields, env...)
	return m
}

// get asks for one token, on conn when given (a kept-open connection), else on a new one.
func (c client) get(conn *ipc.Client) (string, error) {
	if conn == nil {
		nc, err := ipc.Dial(c.socket, c.timeout)
		if err != nil {
			return "", err
		}
		defer nc.Close()
		conn = nc
	}
	resp, err := conn.Do(c.request())
	if err != nil {
		if code := ipc.ErrorCode(err); code != "" {
			return "", fmt.Errorf("%s: %w", code, err)
		}
		return "", err
	}
	t, err := ipc.ParseToken(resp)
	if err != nil {
		return "", err
	}
	return t.Token, nil
}

// getRaw asks for one token on a connection opened without ipc.Dial.
func (c client) getRaw(conn net.Conn) (string, error) {
	_ = conn.SetDeadline(time.Now().Add(c.timeout))
	if err := ipc.WriteMessage(conn, c.request()); err != nil {
		return "", fmt.Errorf("idle connection: send: %w", err)
	}
	resp, err := ipc.ReadMessage(bufio.NewReader(conn))
	if err != nil {
		return "", fmt.Errorf("idle connection: read: %w", err)
	}
	t, err := ipc.ParseToken(resp)
	if err != nil {
		return "", fmt.Errorf("idle connection: %w", err)
	}
	return t.Token, nil
}

// summary is what loop and load print.
type summary struct {
	OK       int64    `json:"ok"`
	Failed   int64    `json:"failed"`
	Errors   []string `json:"errors"` // distinct error texts, at most 10
	Seconds  float64  `json:"seconds"`
	Idle     int      `json:"idle,omitempty"`
	MaxMilli float64  `json:"max_ms"`
	P99Milli float64  `json:"p99_ms"`
}

type tally struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       map[string]bool
	lat        []time.Duration
}

func (t *tally) add(d time.Duration, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lat = append(t.lat, d)
	if err == nil {
		t.ok.Add(1)
		return
	}
	t.failed.Add(1)
	if t.errs == nil {
		t.errs = map[string]bool{}
	}
	if len(t.errs) < 10 {
		t.errs[err.Error()] = true
	}
}

func (t *tally) summary(start time.Time) summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := summary{OK: t.ok.Load(), Failed: t.failed.Load(), Seconds: time.Since(start).Seconds(), Errors: []string{}}
	for e := range t.errs {
		s.Errors = append(s.Errors, e)
	}
	sort.Strings(s.Errors)
	if n := len(t.lat); n > 0 {
		sort.Slice(t.lat, func(i, j int) bool { return t.lat[i] < t.lat[j] })
		s.MaxMilli = float64(t.lat[n-1].Microseconds()) / 1000
		s.P99Milli = float64(t.lat[n*99/100].Microseconds()) / 1000
	}
	return s
}

// loop asks for a token on a new connection every pause until the file until exists.
func (c client) loop(until string, maxDur, pause time.Duration) summary {
	var t tally
	start := time.Now()
	for time.Since(start) < maxDur {
		if _, err := os.Stat(until); err == nil {
			break
		}
		t0 := time.Now()
		_, err := c.get(nil)
		t.add(time.Since(t0), err)
		time.Sleep(pause)
	}
	return t.summary(start)
}

// load opens idle connections, then runs workers that share requests in all, each keeping its
// connection for 50 requests before opening a new one, until they are done or maxDur passed.
func (c client) load(idle, workers, requests int, maxDur time.Duration) summary {
	var t tally
	start := time.Now()
	var held []net.Conn
	for range idle {
		conn, err := net.DialTimeout("unix", c.socket, c.timeout)
		if err != nil {
			t.add(0, fmt.Errorf("idle connection: %w", err))
			break
		}
		held = append(held, conn)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *ipc.Client
			used := 0
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for next.Add(1) <= int64(requests) && time.Since(start) < maxDur {
				if conn == nil || used == 50 {
					if conn != nil {
						conn.Close()
					}
					var err error
					if conn, err = ipc.Dial(c.socket, c.timeout); err != nil {
						conn = nil
						t.add(0, err)
						continue
					}
					used = 0
				}
				t0 := time.Now()
				_, err := c.get(conn)
				t.add(time.Since(t0), err)
				used++
				if err != nil && !errors.As(err, new(*ipc.Error)) {
					conn.Close()
					conn = nil
				}
			}
		}()
	}
	wg.Wait()
	// The idle connections must still be open and served: one request on each of the first ten.
	for i, conn := range held {
		if i < 10 {
			t0 := time.Now()
			_, err := c.getRaw(conn)
			t.add(time.Since(t0), err)
		}
		conn.Close()
	}
	s := t.summary(start)
	s.Idle = len(held)
	return s
}

func report(s summary) {
	out, _ := json.Marshal(s)
	fmt.Println(string(out))
	if s.Failed > 0 {
		os.Exit(1)
	}
}
