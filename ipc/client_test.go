package ipc

import (
	"bufio"
	"net"
	"path/filepath"
	"testing"
)

// A request that cannot be encoded is refused before anything is sent: no wait for an answer,
// and the connection is still good for the next request.
func TestDoRefusesAnInvalidRequestAndStaysUsable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan int, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- -1
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		n := 0
		for {
			if _, err := ReadMessage(r); err != nil {
				served <- n
				return
			}
			n++
			_ = WriteAnswer(conn, NewMessage(KeyVersion, "2", "token", "t"))
		}
	}()
	c, err := Dial(path, 0) // no time limit: none may be left behind by the refused request
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Do(NewMessage(KeyAction, "get", KeyWorkspace, "bad\nvalue")); err == nil {
		t.Fatal("a value with a newline was sent")
	}
	resp, err := c.Do(NewMessage(KeyAction, "get", KeyWorkspace, "ws"))
	if err != nil || !hasToken(resp) {
		t.Fatalf("the next request: %v, %v", resp, err)
	}
	c.Close()
	if n := <-served; n != 1 {
		t.Errorf("the daemon read %d requests, want only the valid one", n)
	}
}

func hasToken(m *Message) bool {
	v, _ := m.Get("token")
	return v == "t"
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"get", 40, "get"},
		{"a\nb\rc\x00d\x7fe\tf", 40, "a b c d e f"},
		{"abcdef", 3, "abc…"},
		{"abcdef", 6, "abcdef"},
		{"aé", 2, "a…"}, // é is two bytes: never cut in half
		{"ééé", 4, "éé…"},
	} {
		if got := Clip(tc.in, tc.n); got != tc.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
