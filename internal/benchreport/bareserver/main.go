// Command bareserver is the reference for blauthd's throughput and memory: a Unix-socket server
// written the way the daemon is (a goroutine per connection, a bufio.Reader, one write per
// answer) that does nothing else. It reads each request up to its empty line and answers a
// fixed block of -size bytes, itself a well-formed get answer. It prints "ready" once it
// listens and removes its socket on SIGINT or SIGTERM.
//
// Without -socket it serves the listening socket a service manager passed (LISTEN_FDS=1,
// descriptor 3, as systemd-socket-activate passes it): the reference for blauthd's cold start.
//
// With -fanout-api it is the reference for a refresh reaching watchers: it exchanges
// BL_CLIENT_CREDENTIALS (from its environment) at that API every -fanout-every, and writes each
// new token, from that one goroutine, to every connection that sent action=watch (which got the
// current one at once): the least a daemon can do to hand a refresh to its watchers.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	socket := flag.String("socket", "", "listen on this Unix socket")
	size := flag.Int("size", 512, "bytes in each answer, its empty line included")
	fanAPI := flag.String("fanout-api", "", "exchange BL_CLIENT_CREDENTIALS at this API base every -fanout-every and write each token to the watchers")
	every := flag.Duration("fanout-every", time.Second, "how often -fanout-api is asked for a new token")
	flag.Parse()
	head := "version=1\nstatus=ok\ntoken="
	activated := *socket == "" && os.Getenv("LISTEN_FDS") == "1" && os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid())
	if (*socket == "" && !activated) || *size < len(head)+3 {
		fmt.Fprintln(os.Stderr, "bareserver: -socket is required unless socket-activated, and -size must be at least", len(head)+3)
		os.Exit(2)
	}
	block := []byte(head + strings.Repeat("x", *size-len(head)-2) + "\n\n")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var ln net.Listener
	var err error
	if activated {
		ln, err = net.FileListener(os.NewFile(3, "activated"))
	} else {
		ln, err = net.Listen("unix", *socket)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bareserver:", err)
		os.Exit(1)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	var fan *fanout
	if *fanAPI != "" {
		fan = &fanout{api: *fanAPI, cc: os.Getenv("BL_CLIENT_CREDENTIALS"), watchers: map[net.Conn]int{}}
		if err := fan.refresh(); err != nil {
			fmt.Fprintln(os.Stderr, "bareserver:", err)
			os.Exit(1)
		}
		go fan.run(ctx, *every)
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		go serve(c, block, fan)
	}
	if !activated {
		os.Remove(*socket)
	}
}

func serve(c net.Conn, block []byte, fan *fanout) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4096)
	watch := false
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if fan != nil {
				fan.remove(c)
			}
			return
		}
		watch = watch || fan != nil && string(line) == "action=watch\n"
		if len(line) == 1 { // the empty line that ends a request
			if watch {
				fan.add(c)
				continue
			}
			if _, err := c.Write(block); err != nil {
				return
			}
		}
	}
}

// fanout is -fanout-api: the current token, and the watchers with the seq= of their last message.
type fanout struct {
	api, cc  string
	mu       sync.Mutex
	tok      string
	exp      int64
	watchers map[net.Conn]int
}

func (f *fanout) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := f.refresh(); err != nil {
			fmt.Fprintln(os.Stderr, "bareserver:", err)
			continue
		}
		f.mu.Lock()
		head := f.head()
		for c, seq := range f.watchers {
			f.watchers[c] = seq + 1
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write(append(strconv.AppendInt(head, int64(seq+1), 10), "\n\n"...))
		}
		f.mu.Unlock()
	}
}

// refresh exchanges the client credentials for a new token, as blauthd does.
func (f *fanout) refresh() error {
	req, err := http.NewRequest(http.MethodPost, strings.TrimRight(f.api, "/")+"/oauth/token", strings.NewReader(`{"grant_type":"client_credentials"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic "+f.cc)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.AccessToken == "" {
		return fmt.Errorf("token endpoint answered %s: %v", resp.Status, err)
	}
	f.mu.Lock()
	f.tok, f.exp = body.AccessToken, time.Now().Unix()+body.ExpiresIn
	f.mu.Unlock()
	return nil
}

// head is the current token as a watch message up to the value of its seq=, with room for the
// rest. f.mu is held.
func (f *fanout) head() []byte {
	s := fmt.Sprintf("version=2\nstatus=ok\nworkspace=fanout\ntoken=%s\nexpiry=%d\nkind=client_credentials\nsource=caller_env:BL_CLIENT_CREDENTIALS\nseq=", f.tok, f.exp)
	return append(make([]byte, 0, len(s)+16), s...)
}

func (f *fanout) add(c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers[c] = 1
	_, _ = c.Write(append(f.head(), "1\n\n"...))
}

func (f *fanout) remove(c net.Conn) {
	f.mu.Lock()
	delete(f.watchers, c)
	f.mu.Unlock()
}
