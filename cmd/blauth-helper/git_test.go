package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/ipc"
)

// gitEnv runs git in isolation: no system or user config, no prompt, pointed at the daemon.
func gitEnv(td *testDaemon) []string {
	return append(td.SocketEnv(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=", "SSH_ASKPASS=")
}

// git runs "git credential ACTION" with our helper as the only one.
func git(t *testing.T, td *testDaemon, input, action string, helperArgs ...string) result {
	t.Helper()
	helper := "!'" + helperBin() + "'"
	if len(helperArgs) > 0 {
		helper += " " + strings.Join(helperArgs, " ")
	}
	return runProc(t, proc{env: gitEnv(td), stdin: input}, "git", "-c", "credential.helper=", "-c", "credential.helper="+helper, "credential", action)
}

// attrs parses git's key=value output.
func attrs(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("not a key=value line: %q in %q", line, out)
		}
		m[k] = v
	}
	return m
}

// jwtExp reads the exp claim of a JWT.
func jwtExp(t *testing.T, tok string) int64 {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Exp == 0 {
		t.Fatalf("no exp in %s: %v", raw, err)
	}
	return claims.Exp
}

// gitAtLeast reports whether the installed git is at least major.minor.
func gitAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	out, err := exec.Command("git", "version").Output()
	if err != nil {
		t.Fatalf("git: %v", err)
	}
	f := strings.Fields(string(out)) // git version 2.39.5
	if len(f) < 3 {
		t.Fatalf("git version: %q", out)
	}
	v := strings.Split(f[2], ".")
	ma, _ := strconv.Atoi(v[0])
	mi := 0
	if len(v) > 1 {
		mi, _ = strconv.Atoi(v[1])
	}
	return ma > major || ma == major && mi >= minor
}

const blaxelHost = "protocol=https\nhost=api.blaxel.ai\n\n"

func TestGitFill(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is required for these tests: ", err)
	}
	t.Run("api key", func(t *testing.T) {
		td := startDaemon(t, daemonOpts{blConfig: twoWorkspaces})
		r := git(t, td, blaxelHost, "fill")
		mustCode(t, r, 0)
		a := attrs(t, r.stdout)
		if a["username"] != "acme-a" || a["password"] != "key-a" || a["host"] != "api.blaxel.ai" {
			t.Errorf("git credential fill: %s", r)
		}
		if _, ok := a["password_expiry_utc"]; ok {
			t.Errorf("an API key does not expire, got %s", r.stdout)
		}
	})
	t.Run("workspace from the URL's user name", func(t *testing.T) {
		td := startDaemon(t, daemonOpts{blConfig: twoWorkspaces})
		r := git(t, td, "url=https://acme-b@api.blaxel.ai/v0/\n\n", "fill")
		mustCode(t, r, 0)
		if a := attrs(t, r.stdout); a["username"] != "acme-b" || a["password"] != "key-b" {
			t.Errorf("git credential fill: %s", r)
		}
	})
	t.Run("workspace from -w in the helper's config", func(t *testing.T) {
		td := startDaemon(t, daemonOpts{blConfig: twoWorkspaces})
		r := git(t, td, blaxelHost, "fill", "-w", "acme-b")
		mustCode(t, r, 0)
		if a := attrs(t, r.stdout); a["username"] != "acme-b" || a["password"] != "key-b" {
			t.Errorf("git credential fill: %s", r)
		}
	})
	t.Run("service account", func(t *testing.T) {
		api := newAPI(t)
		cc := api.AddClient("sa-id", "sa-secret")
		td := startDaemon(t, daemonOpts{api: api, env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}})
		r := git(t, td, blaxelHost, "fill")
		mustCode(t, r, 0)
		a := attrs(t, r.stdout)
		served := daemonToken(t, td.Socket, "acme")
		if a["username"] != "acme" || a["password"] != served.Token {
			t.Errorf("git credential fill: want acme and the daemon's token, got %s", r)
		}
		exp := jwtExp(t, served.Token)
		// git passes password_expiry_utc on from 2.41; the helper always sends it.
		if gitAtLeast(t, 2, 41) && a["password_expiry_utc"] != strconv.FormatInt(exp, 10) {
			t.Errorf("password_expiry_utc: want %d, got %s", exp, r.stdout)
		}
		r = runProc(t, proc{env: td.SocketEnv(), stdin: blaxelHost}, helperBin(), "get")
		mustCode(t, r, 0)
		if got := attrs(t, r.stdout)["password_expiry_utc"]; got != strconv.FormatInt(exp, 10) {
			t.Errorf("get: password_expiry_utc: want %d (the JWT's exp), got %q", exp, got)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		td := startDaemon(t, daemonOpts{})
		r := git(t, td, blaxelHost, "fill")
		if r.code == 0 || r.stdout != "" {
			t.Errorf("git must fail without a password, got %s", r)
		}
		if !strings.Contains(r.stderr, "blauth: error: ") {
			t.Errorf("git's stderr should carry the helper's error: %q", r.stderr)
		}
	})
}

// With capability[]=authtype (git 2.46+), the helper also offers the token as a Bearer credential.
func TestGitGetAuthtype(t *testing.T) {
	api := newAPI(t)
	cc := api.AddClient("sa-id", "sa-secret")
	td := startDaemon(t, daemonOpts{api: api, env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}})
	r := runHelper(t, "capability[]=authtype\nprotocol=https\nhost=api.blaxel.ai\n\n", "get")
	mustCode(t, r, exitOK)
	tok := daemonToken(t, td.Socket, "acme").Token
	want := "username=acme\npassword=" + tok + "\npassword_expiry_utc=" + strconv.FormatInt(jwtExp(t, tok), 10) +
		"\ncapability[]=authtype\nauthtype=Bearer\ncredential=" + tok + "\nephemeral=true\n"
	if r.stdout != want || r.stderr != "" {
		t.Errorf("get with capability[]=authtype:\nwant %q\n got %s", want, r)
	}
	// Without the capability, none of it.
	r = runHelper(t, blaxelHost, "get")
	if strings.Contains(r.stdout, "authtype") || strings.Contains(r.stdout, "credential=") {
		t.Errorf("authtype sent to a git that did not announce it: %q", r.stdout)
	}
}

// git credential reject calls erase with the password after a 401: the daemon drops that token
// and the next fill gets a new one from the token endpoint.
func TestGitRejectFetchesNewToken(t *testing.T) {
	api := newAPI(t)
	cc := api.AddClient("sa-id", "sa-secret")
	td := startDaemon(t, daemonOpts{api: api, env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}})

	r := git(t, td, blaxelHost, "fill")
	mustCode(t, r, 0)
	first := attrs(t, r.stdout)["password"]
	if r = git(t, td, blaxelHost, "fill"); attrs(t, r.stdout)["password"] != first || api.Count("client_credentials") != 1 {
		t.Fatalf("a second fill must be served from the cache: %s, %d exchanges", r, api.Count("client_credentials"))
	}

	// Rejecting a token the daemon no longer serves drops nothing.
	mustCode(t, git(t, td, "protocol=https\nhost=api.blaxel.ai\nusername=acme\npassword=some-old-token\n\n", "reject"), 0)
	if r = git(t, td, blaxelHost, "fill"); attrs(t, r.stdout)["password"] != first {
		t.Fatalf("rejecting another token dropped the cached one: %s", r)
	}

	mustCode(t, git(t, td, "protocol=https\nhost=api.blaxel.ai\nusername=acme\npassword="+first+"\n\n", "reject"), 0)
	r = git(t, td, blaxelHost, "fill")
	mustCode(t, r, 0)
	second := attrs(t, r.stdout)["password"]
	if second == "" || second == first {
		t.Errorf("after reject, want a new token, got the same: %s", r)
	}
	if n := api.Count("client_credentials"); n != 2 {
		t.Errorf("want 2 exchanges at the token endpoint, got %d", n)
	}
}

func TestGitStoreIsNoop(t *testing.T) {
	api := newAPI(t)
	cc := api.AddClient("sa-id", "sa-secret")
	td := startDaemon(t, daemonOpts{api: api, env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc}})
	r := runHelper(t, "protocol=https\nhost=api.blaxel.ai\nusername=acme\npassword=whatever\n\n", "store")
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("store: want exit 0 and no output, got %s", r)
	}
	r = git(t, td, "protocol=https\nhost=api.blaxel.ai\nusername=acme\npassword=whatever\n\n", "approve")
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("git credential approve: want exit 0 and no output, got %s", r)
	}
	if n := api.Count(""); n != 0 {
		t.Errorf("store reached the token endpoint %d times", n)
	}
}

func TestGitEraseWithoutDaemon(t *testing.T) {
	// No daemon: nothing is cached, so erase succeeds without starting one.
	dir := shortTempDir(t)
	socket := filepath.Join(dir, "run", "blauthd.sock")
	r := runProc(t, proc{env: []string{ipc.SocketEnv + "=" + socket, "BLAUTH_DAEMON=/nonexistent/blauthd"}, stdin: "protocol=https\nhost=api.blaxel.ai\npassword=x\n\n"}, helperBin(), "erase")
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("erase without a daemon: want exit 0 and no output, got %s", r)
	}
}

// git may call helpers with actions it adds later; a helper must ignore them. git sets
// GIT_EXEC_PATH for its helpers, which is how the helper knows git is calling.
func TestGitUnknownActionIgnored(t *testing.T) {
	startDaemon(t, daemonOpts{env: []string{"BL_WORKSPACE=acme", "BL_API_KEY=k"}})
	t.Run("run by git", func(t *testing.T) {
		t.Setenv("GIT_EXEC_PATH", "/usr/lib/git-core")
		r := runHelper(t, blaxelHost, "frobnicate")
		if r.code != 0 || r.stdout != "" || r.stderr != "" {
			t.Errorf("want exit 0 and no output, got %s", r)
		}
		r = runProc(t, proc{env: []string{"GIT_EXEC_PATH=/usr/lib/git-core"}, stdin: blaxelHost}, helperBin(), "frobnicate")
		if r.code != 0 || r.stdout != "" || r.stderr != "" {
			t.Errorf("binary: want exit 0 and no output, got %s", r)
		}
	})
	t.Run("run by a user", func(t *testing.T) {
		mustFail(t, runHelper(t, "", "frobnicate"), exitUsage)
	})
}

// A token or workspace holding a line break would let the daemon's answer forge git attributes
// (host=…), header lines or shell commands. The daemon cannot send one (values never hold LF), so
// the encoders are tested directly, and a daemon that sends CR in a value is refused at reading.
func TestLineBreaksNeverPrinted(t *testing.T) {
	for _, bad := range []ipc.Token{
		{Workspace: "acme", Token: "tok\nhost=evil.example"},
		{Workspace: "acme", Token: "tok\rx"},
		{Workspace: "acme", Token: "tok\x00x"},
		{Workspace: "acme\nhost=evil.example", Token: "tok"},
	} {
		in := ipc.NewMessage("capability[]", "authtype")
		if b, err := gitAnswer(&bad, in); err == nil {
			t.Errorf("gitAnswer(%q, %q) printed %q", bad.Workspace, bad.Token, b)
		}
		for _, cmd := range []string{"token", "header", "env"} {
			if out, err := tokenOutput(cmd, &bad); err == nil {
				t.Errorf("%s: %q, %q printed %q", cmd, bad.Workspace, bad.Token, out)
			}
		}
	}
	good := ipc.Token{Workspace: "acme", Token: "tok", Expiry: time.Unix(1_900_000_000, 0)}
	if b, err := gitAnswer(&good, &ipc.Message{}); err != nil || string(b) != "username=acme\npassword=tok\npassword_expiry_utc=1900000000\n" {
		t.Errorf("gitAnswer: %q, %v", b, err)
	}

	// A fake daemon whose answer holds a CR inside the token.
	socket := filepath.Join(shortTempDir(t), "fake.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := ipc.ReadMessage(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = c.Write([]byte("version=1\nstatus=ok\nworkspace=acme\ntoken=tok\rhost=evil.example\nexpiry=0\nkind=api_key\n\n"))
			}()
		}
	}()
	t.Setenv(ipc.SocketEnv, socket)
	t.Setenv("BLAUTH_NO_SPAWN", "1")
	for _, args := range [][]string{{"token"}, {"header"}, {"env"}, {"get"}} {
		r := runHelper(t, blaxelHost, args...)
		if r.code == 0 || r.stdout != "" || !strings.HasPrefix(r.stderr, "blauth: error: ") {
			t.Errorf("%s with a CR in the token: want a failure and nothing on stdout, got %s", args, r)
		}
		if strings.Contains(r.stderr, "evil") {
			t.Errorf("%s: the error quotes the bad value: %q", args, r.stderr)
		}
	}
}
