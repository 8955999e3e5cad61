package daemon_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// status asks td for the status as a version 2 client and decodes it.
func status(t *testing.T, td *daemontest.Daemon, kv ...string) ipc.Status {
	t.Helper()
	resp, err := td.Do(t, append([]string{ipc.KeyAction, ipc.ActionStatus}, kv...)...)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var st ipc.Status
	if err := json.Unmarshal([]byte(resp.Long(ipc.KeyJSON)), &st); err != nil {
		t.Fatalf("status JSON: %v", err)
	}
	return st
}

// manyWorkspaces is a bl config with n API-key workspaces, ws-0 to ws-(n-1).
func manyWorkspaces(n int) string {
	var b strings.Builder
	b.WriteString("context:\n  workspace: ws-0\nworkspaces:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "- name: ws-%d\n  credentials:\n    apiKey: \"key-%d\"\n", i, i)
	}
	b.WriteString("tracking: false\n")
	return b.String()
}

// A status too long for one line (300 workspaces) reaches a version 2 client whole, over
// several lines; a version 1 client, which cannot take it, is told so with the way out. How
// fast a status of 1,000 and 20,000 workspaces is, is BenchmarkStatus.
func TestStatusLongerThanALine(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{BLConfig: manyWorkspaces(300)})
	resp, err := td.Do(t, ipc.KeyAction, ipc.ActionStatus)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if n := len(resp.All(ipc.KeyJSON)); n < 2 {
		t.Fatalf("the status of 300 workspaces came on %d json= line(s), want it split", n)
	}
	var st ipc.Status
	if err := json.Unmarshal([]byte(resp.Long(ipc.KeyJSON)), &st); err != nil {
		t.Fatalf("status JSON: %v", err)
	}
	if len(st.Workspaces) != 300 {
		t.Fatalf("status lists %d workspaces, want 300", len(st.Workspaces))
	}
	c, err := ipc.Dial(td.Socket, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Do(ipc.NewMessage(ipc.KeyVersion, "1", ipc.KeyAction, ipc.ActionStatus))
	var e *ipc.Error
	if !errors.As(err, &e) || e.Code != ipc.CodeBadRequest || !strings.Contains(e.Hint, "version=2") {
		t.Fatalf("version 1 status of 300 workspaces: %v, want bad_request pointing at version 2", err)
	}
}

func TestConnectionsPastTheLimitAreToldWhy(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=k"}, Mutate: func(c *daemon.Config) { c.MaxConns = 2 }})
	var held []*ipc.Client
	for i := 0; i < 2; i++ {
		c, err := ipc.Dial(td.Socket, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Do(ipc.NewMessage(ipc.KeyAction, ipc.ActionPing)); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	_, err := td.Do(t, ipc.KeyAction, ipc.ActionGet)
	if ipc.ErrorCode(err) != ipc.CodeBusy {
		t.Fatalf("a third connection with room for two: %v, want code busy", err)
	}
	held[0].Close()
	testkit.WaitFor(t, 30*time.Second, "room after a connection closed", func() bool {
		_, err := td.Do(t, ipc.KeyAction, ipc.ActionGet)
		return err == nil
	})
}

func TestStopEndsTheDaemon(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{Env: []string{"BL_WORKSPACE=a", "BL_API_KEY=k"}})
	c, err := ipc.Dial(td.Socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Do(ipc.NewMessage(ipc.KeyVersion, "1", ipc.KeyAction, ipc.ActionStop))
	c.Close()
	if ipc.ErrorCode(err) != ipc.CodeUnknownAction {
		t.Fatalf("stop from a version 1 client: %v, want unknown_action", err)
	}
	resp, err := td.Do(t, ipc.KeyAction, ipc.ActionStop)
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	if resp.Value(ipc.KeyPID) != fmt.Sprint(os.Getpid()) || resp.Value(ipc.KeyManager) != ipc.ManagerForeground {
		t.Fatalf("stop answered %v, want this pid and manager foreground", resp.Fields)
	}
	if !td.Stopped(30 * time.Second) {
		t.Fatal("the daemon still runs 30s after stop")
	}
	if _, err := os.Stat(td.Socket); !os.IsNotExist(err) {
		t.Fatalf("the socket is left after stop: %v", err)
	}
}

func TestSourceErrorsAreNamedOnceAndInResolutionErrors(t *testing.T) {
	td := daemontest.Start(t, daemontest.Options{BLConfig: "context:\n  workspace: acme\nworkspaces: [\n"})
	_, err := td.Do(t, ipc.KeyAction, ipc.ActionGet)
	var e *ipc.Error
	if !errors.As(err, &e) || e.Code != ipc.CodeNoWorkspace || !strings.Contains(e.Message, "config.yaml") || !strings.Contains(e.Message, "line") {
		t.Fatalf("get with a broken bl config: %v, want no_workspace naming the config and the line", err)
	}
	if !strings.Contains(e.Hint, "fix the source") {
		t.Fatalf("hint %q does not point at the broken source", e.Hint)
	}
	st := status(t, td, ipc.KeyWorkspace, "other")
	if len(st.SourceErrors) != 1 || st.SourceErrors[0].Source.Kind != "bl_config" {
		t.Fatalf("status source errors: %+v, want the bl config's, once", st.SourceErrors)
	}
}

func TestFailedWriteBackIsVisibleAndRetried(t *testing.T) {
	api, clock := apiOnFakeClock(t)
	api.SetRotate(true)
	_, rt := api.NewSession("user", "")
	expired := api.TokenExpiring("user", clock.Now().Add(-time.Minute), 2*time.Hour)
	cfg := sessionConfig(expired, rt)
	td := daemontest.Start(t, daemontest.Options{API: api, BLConfig: cfg, Clock: clock})
	path := filepath.Join(td.Home, ".blaxel", "config.yaml")
	td.Token(t) // refreshed and written back
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The file is broken by hand: the daemon keeps its last good view, but cannot write back.
	if err := os.WriteFile(path, []byte("workspaces: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Add(125 * time.Minute) // the session must be refreshed
	tok := td.Token(t)
	if !strings.Contains(tok.Hint, "could not be saved") {
		t.Fatalf("served after a failed write-back with hint %q, want it said", tok.Hint)
	}
	st := status(t, td)
	if len(st.Workspaces) == 0 || st.Workspaces[0].WriteBackError == "" {
		t.Fatalf("status after a failed write-back: %+v", st.Workspaces)
	}
	// The user repairs the file (as it was): the next retry writes the rotated session.
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the rotated session in the repaired file", func() bool {
		clock.Add(30 * time.Second) // the broker retries a failed write-back at least this often
		td.Broker().Tick()
		td.Broker().Wait()
		data, _ := os.ReadFile(path)
		return strings.Contains(string(data), "access_token: "+tok.Token)
	})
	if w := status(t, td).Workspaces[0].WriteBackError; w != "" {
		t.Fatalf("status still reports a write-back error after it landed: %s", w)
	}
	if h := td.Token(t).Hint; h != "" {
		t.Fatalf("hint after the write-back landed: %q", h)
	}
}

// A caller's BL_API_URL applies only to its own credentials: when a daemon-held one fails, the
// error says that the caller's choice was not used, and where the request went instead.
func TestIgnoredCallerBaseIsNamed(t *testing.T) {
	api := blaxeltest.New(0)
	defer api.Close()
	cc := api.AddClient("sa", "secret")
	api.SetFault(blaxeltest.Fault503, -1)
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}})
	_, err := td.Do(t, ipc.KeyAction, ipc.ActionGet, "env.BL_API_URL", "http://127.0.0.1:9/v0")
	var e *ipc.Error
	if !errors.As(err, &e) || e.Code != ipc.CodeUnavailable ||
		!strings.Contains(e.Message, "BL_API_URL / BL_ENV ask for http://127.0.0.1:9/v0") || !strings.Contains(e.Message, api.Base) ||
		!strings.Contains(e.Hint, "blauthd's own environment") {
		t.Fatalf("a daemon-held credential failing, the caller asking for another base: %v (hint %q)", err, e.Hint)
	}
	// Without a base of its own, the caller is told nothing of the kind.
	_, err = td.Do(t, ipc.KeyAction, ipc.ActionGet)
	if err == nil || strings.Contains(err.Error(), "ask for") {
		t.Fatalf("no caller base: %v", err)
	}
}
