// Command bareserver is the reference for blauthd's throughput and memory: a Unix-socket server
// written the way the daemon is (a goroutine per connection, a bufio.Reader, one write per
// answer) that does nothing else. It reads each request up to its empty line and answers a
// fixed block of -size bytes, itself a well-formed get answer. It prints "ready" once it
// listens and removes its socket on SIGINT or SIGTERM.
//
// Without -socket it serves the listening socket a service manager passed (LISTEN_FDS=1,
// descriptor 3, as systemd-socket-activate passes it): the reference for blauthd's cold start.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	socket := flag.String("socket", "", "listen on this Unix socket")
	size := flag.Int("size", 512, "bytes in each answer, its empty line included")
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
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		go serve(c, block)
	}
	if !activated {
		os.Remove(*socket)
	}
}

func serve(c net.Conn, block []byte) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4096)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		if len(line) == 1 { // the empty line that ends a request
			if _, err := c.Write(block); err != nil {
				return
			}
		}
	}
}
