package main

import (
	"net"
	"os"
)

// listenForTest stands in for a running daemon: something listening on the socket.
func listenForTest(path string) (func(), error) {
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return func() { l.Close(); os.Remove(path) }, nil
}
