// Command minclient is the reference for blauth-helper's latency: the least a Go program must do
// to get a token from blauthd. It dials $BLAUTH_SOCKET, sends one get request, reads the answer
// up to its empty line and prints the token. Standard library only, no flags, no fmt.
package main

import (
	"bufio"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	c, err := net.DialTimeout("unix", os.Getenv("BLAUTH_SOCKET"), 2*time.Second)
	if err != nil {
		fail(err.Error())
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("version=1\naction=get\n\n")); err != nil {
		fail(err.Error())
	}
	r := bufio.NewReader(c)
	var tok string
	ok := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			fail("read answer: " + err.Error())
		}
		line = line[:len(line)-1]
		if line == "" {
			break
		}
		if v, found := strings.CutPrefix(line, "token="); found {
			tok = v
		}
		ok = ok || line == "status=ok"
	}
	if !ok || tok == "" {
		fail("the daemon answered without a token")
	}
	_, _ = os.Stdout.WriteString(tok + "\n")
}

func fail(msg string) {
	_, _ = os.Stderr.WriteString("minclient: " + msg + "\n")
	os.Exit(1)
}
