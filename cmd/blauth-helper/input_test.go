package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// What the caller gives that a request cannot carry is refused, naming it: dropping it would
// resolve the daemon's default workspace instead, and exit 0 with another workspace's token.
func TestCallerInputThatCannotBeSentIsRefused(t *testing.T) {
	td := startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=default", "BL_API_KEY=default-key"}})
	t.Run("CR in a BL_ variable", func(t *testing.T) {
		r := runProc(t, proc{env: append(td.SocketEnv(), "BL_WORKSPACE=mine\r", "BL_API_KEY=mine-key")}, helperBin(), "exec", "--", "true")
		mustFail(t, r, exitUsage)
		if !strings.Contains(r.stderr, "BL_WORKSPACE holds a trailing carriage return") {
			t.Errorf("the error does not name the variable: %q", r.stderr)
		}
	})
	t.Run("LF in a BL_ variable", func(t *testing.T) {
		t.Setenv("BL_API_KEY", "line1\nline2")
		r := runHelper(t, "", "token")
		mustFail(t, r, exitUsage)
		if !strings.Contains(r.stderr, "BL_API_KEY holds a line break") || strings.Contains(r.stderr, "line1") {
			t.Errorf("want the variable named and its value kept secret: %q", r.stderr)
		}
	})
	t.Run("line break in the working directory", func(t *testing.T) {
		dir := filepath.Join(shortTempDir(t), "a\nb")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		r := runProc(t, proc{env: td.SocketEnv(), dir: dir}, helperBin(), "token")
		mustFail(t, r, exitUsage)
		if !strings.Contains(r.stderr, "working directory") {
			t.Errorf("the error does not name the directory: %q", r.stderr)
		}
	})
	t.Run("working directory removed", func(t *testing.T) {
		dir := filepath.Join(shortTempDir(t), "gone")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		r := runProc(t, proc{env: td.SocketEnv(), dir: dir}, "sh", "-c", `rmdir "$PWD" && exec "$0" token`, helperBin())
		mustFail(t, r, exitUsage)
		if !strings.Contains(r.stderr, "working directory") {
			t.Errorf("the error does not name the directory: %q", r.stderr)
		}
	})
}

func TestTyposAreNamedAndCorrected(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--worksapce", "acme", "token"}, `unknown flag "--worksapce"; did you mean "--workspace"?`},
		{[]string{"tokn"}, `unknown command "tokn"; did you mean "token"?`},
		{[]string{"stauts"}, `unknown command "stauts"; did you mean "status"?`},
		{[]string{"status", "--jsn"}, `unknown flag "--jsn"; did you mean "--json"?`},
		{[]string{"token", "--mint-ttl=5"}, `unknown flag "--mint-ttl"; did you mean "--min-ttl"?`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"` + "\n"},
	} {
		r := runHelper(t, "", tc.args...)
		mustFail(t, r, exitUsage)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%q: stderr %q, want %q", tc.args, r.stderr, tc.want)
		}
	}
}

func TestRelativeTimes(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{now.Add(-300 * time.Millisecond), "just now"},
		{now.Add(-5 * time.Second), "5 s ago"},
		{now.Add(72*time.Minute + 3*time.Second), "in 1h12m"},
		{now.Add(-(3*time.Minute + 7*time.Second)), "3m07s ago"},
		{now.Add(50 * time.Hour), "in 2 days"},
		{time.Time{}, "-"},
	} {
		if got := relative(tc.at, now); got != tc.want {
			t.Errorf("relative(%v) = %q, want %q", tc.at.Sub(now), got, tc.want)
		}
	}
}

// A daemon of protocol version 1 (before this helper) refuses version=2: the helper sends the
// request again as version 1, so an upgrade of the helper never leaves a running daemon's
// users without tokens.
func TestOlderDaemonIsSpokenToInItsVersion(t *testing.T) {
	socket := filepath.Join(shortTempDir(t), "old.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					req, err := ipc.ReadMessage(r)
					if err != nil {
						return
					}
					var answer *ipc.Message
					if v := req.Value(ipc.KeyVersion); v != "" && v != "1" {
						answer = ipc.ErrorMessage(&ipc.Error{Code: ipc.CodeUnsupportedVersion, Message: "protocol version " + v + " is not supported"})
					} else {
						answer = (&ipc.Token{Workspace: "acme", Token: "old-daemon-token", Kind: ipc.KindAPIKey, Source: "daemon_env:BL_API_KEY"}).Message()
					}
					answer.Set(ipc.KeyVersion, "1")
					_ = ipc.WriteMessage(c, answer)
				}
			}()
		}
	}()
	t.Setenv(ipc.SocketEnv, socket)
	t.Setenv("BLAUTH_NO_SPAWN", "1")
	r := runHelper(t, "", "token")
	if r.code != 0 || r.stdout != "old-daemon-token\n" {
		t.Fatalf("token from a version 1 daemon: %s", r)
	}
}

// Blaxel's SDKs let ./.env win over the environment: exec refuses to hand a command another
// workspace's token when the .env would pair it with its own workspace, or replace it.
func TestExecRefusesWhatTheDotenvWouldUndo(t *testing.T) {
	td := startDaemon(t, daemonOpts{blConfig: "context:\n  workspace: other\nworkspaces:\n- name: other\n  credentials:\n    apiKey: \"other-key\"\n- name: mine\n  credentials:\n    apiKey: \"mine-key\"\ntracking: false\n"})
	// project returns a new directory holding a .env with content.
	project := func(content string) string {
		dir := shortTempDir(t)
		if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	show := []string{"exec", "--", "sh", "-c", `printf '%s|%s' "$BL_WORKSPACE" "$BL_API_KEY"`}
	mine := project("BL_WORKSPACE=mine\n")
	r := runProc(t, proc{env: td.SocketEnv(), dir: mine}, helperBin(), append([]string{"-w", "other"}, show...)...)
	mustFail(t, r, exitUsage)
	if !strings.Contains(r.stderr, "sets BL_WORKSPACE=mine") || !strings.Contains(r.stderr, "other's token for workspace mine") || strings.Contains(r.stderr, "other-key") {
		t.Fatalf("exec -w other under a .env for mine: %s", r)
	}
	// The .env's own workspace is consistent: allowed.
	if r := runProc(t, proc{env: td.SocketEnv(), dir: mine}, helperBin(), show...); r.code != 0 || r.stdout != "mine|mine-key" {
		t.Fatalf("exec under a .env for mine: %s", r)
	}
	// A .env credential that is not the one served would replace the token exec sets.
	r = runProc(t, proc{env: td.SocketEnv(), dir: project("BL_WORKSPACE=other\nBL_API_KEY=k\n")}, helperBin(), append([]string{"-w", "mine"}, show...)...)
	mustFail(t, r, exitUsage)
	if !strings.Contains(r.stderr, "sets BL_WORKSPACE=other") {
		t.Fatalf("exec -w mine under a .env with other's key: %s", r)
	}
	// The .env's own key, served for the workspace asked: consistent.
	r = runProc(t, proc{env: td.SocketEnv(), dir: project("BL_API_KEY=dotenv-key\n")}, helperBin(), append([]string{"-w", "other"}, show...)...)
	if r.code != 0 || r.stdout != "other|dotenv-key" {
		t.Fatalf("the .env's own key, served: %s", r)
	}
}
