package daemon_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

func TestWatchersFollowEveryRefreshForOneExchange(t *testing.T) {
	api, clock := apiOnFakeClock(t)
	cc := api.AddClient("sa", "secret")
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}, Clock: clock})
	var ws []*daemontest.Watcher
	for i := 0; i < 10; i++ {
		ws = append(ws, td.Watch(t))
	}
	var first string
	for i, w := range ws {
		m := w.Next(t)
		tok, err := ipc.ParseToken(m)
		if err != nil || m.Value(ipc.KeySeq) != "1" || m.Value(ipc.KeyVersion) != "2" {
			t.Fatalf("watcher %d first message: %v %v", i, m.Fields, err)
		}
		if first == "" {
			first = tok.Token
		} else if tok.Token != first {
			t.Fatal("watchers of one credential got different tokens")
		}
	}
	for round := 2; round <= 4; round++ {
		clock.Add(50 * time.Minute) // past the refresh point of a 2h token
		td.Broker().Tick()
		var got string
		for i, w := range ws {
			m := w.Next(t)
			tok, err := ipc.ParseToken(m)
			if err != nil || m.Value(ipc.KeySeq) != fmt.Sprint(round) {
				t.Fatalf("round %d, watcher %d: %v %v", round, i, m.Fields, err)
			}
			if tok.Token == first || got != "" && tok.Token != got {
				t.Fatalf("round %d, watcher %d: not the one new token", round, i)
			}
			got = tok.Token
		}
		first = got
		for _, w := range ws {
			w.Quiet(t, 20*time.Millisecond)
		}
	}
	if n := api.Count(""); n != 4 {
		t.Fatalf("10 watchers over 3 refreshes made %d token requests, want 4", n)
	}
}

func TestWatchFollowsSourceChangesAndFailures(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	td := daemontest.Start(t, daemontest.Options{API: api, BLConfig: "context:\n  workspace: acme\nworkspaces:\n- name: acme\n  credentials:\n    apiKey: \"key-1\"\ntracking: false\n"})
	w := td.Watch(t)
	if tok, err := ipc.ParseToken(w.Next(t)); err != nil || tok.Token != "key-1" {
		t.Fatalf("first: %v %v", tok, err)
	}
	path := filepath.Join(td.Home, ".blaxel", "config.yaml")
	if err := os.WriteFile(path, []byte("context:\n  workspace: acme\nworkspaces:\n- name: acme\n  credentials:\n    apiKey: \"key-2\"\ntracking: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := ipc.ParseToken(w.Next(t)); err != nil || tok.Token != "key-2" {
		t.Fatalf("after the key changed: %v %v", tok, err)
	}
	// The workspace loses its credential (a logout): an error message with its code.
	if err := os.WriteFile(path, []byte("context:\n  workspace: acme\nworkspaces:\n- name: other\n  credentials:\n    apiKey: \"o\"\ntracking: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := w.Next(t)
	if ipc.ErrorCode(ipc.AsError(m)) != ipc.CodeNoCredentials || m.Value(ipc.KeySeq) != "3" {
		t.Fatalf("after the logout: %v", m.Fields)
	}
	// A refused service account: auth_failed, once.
	cc := api.AddClient("sa", "secret")
	api.SetFault(blaxeltest.FaultInvalidClient, -1)
	w2 := td.Watch(t, ipc.KeyWorkspace, "ci", "env.BL_CLIENT_CREDENTIALS", cc)
	if m := w2.Next(t); ipc.ErrorCode(ipc.AsError(m)) != ipc.CodeAuthFailed {
		t.Fatalf("refused credential: %v", m.Fields)
	}
	w2.Quiet(t, 100*time.Millisecond)
}

func TestWatchEndsWithTheDaemonAndWithTheClient(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=k"}})
	w := td.Watch(t)
	w.Next(t)
	// The client closes: the daemon lets the connection go (stop does not wait for it).
	w.C.Close()
	w2 := td.Watch(t)
	w2.Next(t)
	if _, err := td.Do(t, ipc.KeyAction, ipc.ActionStop); err != nil {
		t.Fatal(err)
	}
	m := w2.Next(t)
	if ipc.ErrorCode(ipc.AsError(m)) != ipc.CodeShuttingDown {
		t.Fatalf("watcher at shutdown: %v", m.Fields)
	}
	if !td.Stopped(30 * time.Second) {
		t.Fatal("the daemon did not stop with a watcher connected")
	}
}

func TestWatchNeedsVersion2(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=k"}})
	c, err := ipc.Dial(td.Socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Do(ipc.NewMessage(ipc.KeyVersion, "1", ipc.KeyAction, ipc.ActionWatch))
	if ipc.ErrorCode(err) != ipc.CodeUnknownAction {
		t.Fatalf("watch as version 1: %v", err)
	}
}

// A watcher that stops reading is dropped once its message cannot be written; the others keep
// getting every new token and the refreshes go on.
func TestStalledWatcherDelaysNobody(t *testing.T) {
	api, clock := apiOnFakeClock(t)
	cc := api.AddClient("sa", "secret")
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}, Clock: clock,
		Mutate: func(c *daemon.Config) { c.WatchWriteTimeout = 100 * time.Millisecond }})
	stalled := td.Watch(t)
	_ = stalled.C.(*net.UnixConn).SetReadBuffer(1024)
	live := td.Watch(t)
	live.Next(t)
	for i := 0; i < 2000; i++ {
		clock.Add(50 * time.Minute)
		td.Broker().Tick()
		td.Broker().Wait()
		m := live.Next(t)
		if _, err := ipc.ParseToken(m); err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
		if m.Value(ipc.KeySeq) != fmt.Sprint(i+2) {
			t.Fatalf("refresh %d: seq %s", i, m.Value(ipc.KeySeq))
		}
	}
	if n := api.Count(""); n != 2001 {
		t.Fatalf("%d exchanges for 2000 refreshes", n)
	}
	// The stalled watcher was dropped: once it reads what the socket held, its stream ends.
	_ = stalled.C.SetReadDeadline(time.Now().Add(30 * time.Second))
	n := 0
	for {
		if _, err := stalled.Read(30 * time.Second); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the stalled watcher's connection was never closed (%d messages read)", n)
			}
			break
		}
		n++
	}
	if n >= 2001 {
		t.Fatalf("the stalled watcher got all %d messages: it was never stalled", n)
	}
}
