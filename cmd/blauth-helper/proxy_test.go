package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// header --json prints the object Claude Code's headersHelper reads: header names to values.
func TestHeaderJSON(t *testing.T) {
	startDaemon(t, daemonOpts{blConfig: twoWorkspaces})
	for _, tc := range []struct {
		name string
		args []string
		ws   string
		key  string
	}{
		{"default workspace", []string{"header", "--json"}, "acme-a", "key-a"},
		{"positional workspace", []string{"header", "--json", "acme-b"}, "acme-b", "key-b"},
		{"flag after the workspace", []string{"header", "acme-b", "--json"}, "acme-b", "key-b"},
		{"-w", []string{"-w", "acme-b", "header", "--json"}, "acme-b", "key-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runHelper(t, "", tc.args...)
			mustCode(t, r, exitOK)
			if strings.Count(r.stdout, "\n") != 1 || !strings.HasSuffix(r.stdout, "\n") || r.stderr != "" {
				t.Errorf("want one line and no stderr, got %s", r)
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("not a JSON object of strings: %v: %q", err, r.stdout)
			}
			want := map[string]string{"Authorization": "Bearer " + tc.key, "X-Blaxel-Authorization": "Bearer " + tc.key, "X-Blaxel-Workspace": tc.ws}
			if len(got) != len(want) {
				t.Errorf("got %d headers, want %d: %v", len(got), len(want), got)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
	mustFail(t, runHelper(t, "", "header", "--jsn"), exitUsage)
}

// fakeProxy is a stand-in for blauth-proxy that prints the arguments and socket it was given,
// one per line, and exits 9.
func fakeProxy(t *testing.T) string {
	t.Helper()
	p := filepath.Join(shortTempDir(t), "blauth-proxy")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\nprintf 'socket=%s\\n' \"$BLAUTH_SOCKET\"\nexit 9\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// exec --proxy and mcp check the credential, then replace the helper with blauth-proxy, naming
// the workspace served, the --min-ttl given and the socket.
func TestProxyCommandsExecBlauthProxy(t *testing.T) {
	td := startDaemon(t, daemonOpts{blConfig: twoWorkspaces})
	t.Setenv("BLAUTH_PROXY", fakeProxy(t))
	socket := "socket=" + td.Socket
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"exec --proxy", []string{"exec", "--proxy", "--", "node", "app.js", "-w", "x"}, []string{"-w", "acme-a", "exec", "--", "node", "app.js", "-w", "x", socket}},
		{"exec --proxy without --", []string{"exec", "--proxy", "node", "app.js"}, []string{"-w", "acme-a", "exec", "--", "node", "app.js", socket}},
		{"workspace and min-ttl", []string{"--min-ttl", "600", "exec", "--proxy", "-w", "acme-b", "--", "sh"}, []string{"-w", "acme-b", "--min-ttl", "600", "exec", "--", "sh", socket}},
		{"mcp", []string{"mcp", "https://run.blaxel.ai/acme-a/functions/f/mcp"}, []string{"-w", "acme-a", "mcp", "https://run.blaxel.ai/acme-a/functions/f/mcp", socket}},
		{"mcp -w", []string{"-w", "acme-b", "mcp", "http://127.0.0.1:9/mcp"}, []string{"-w", "acme-b", "mcp", "http://127.0.0.1:9/mcp", socket}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runHelper(t, "", tc.args...)
			mustCode(t, r, 9)
			if got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("blauth-proxy got\n  %q\nwant\n  %q", got, tc.want)
			}
		})
	}
	t.Run("bad command lines", func(t *testing.T) {
		for _, args := range [][]string{{"mcp"}, {"mcp", "a", "b"}, {"mcp", "ftp://x/mcp"}, {"mcp", "--json"}, {"exec", "--proxy"}, {"exec", "--proxi", "--", "sh"}} {
			r := runHelper(t, "", args...)
			mustFail(t, r, exitUsage)
		}
	})
	t.Run("no credential: blauth-proxy is not run", func(t *testing.T) {
		r := runHelper(t, "", "-w", "nobody", "exec", "--proxy", "--", "sh")
		mustFail(t, r, exitNoCreds)
	})
	t.Run("BLAUTH_PROXY is not executable", func(t *testing.T) {
		t.Setenv("BLAUTH_PROXY", filepath.Join(shortTempDir(t), "missing"))
		r := runHelper(t, "", "mcp", "https://run.blaxel.ai/x/functions/f/mcp")
		if r.code != 127 || r.stdout != "" || !strings.Contains(r.stderr, "BLAUTH_PROXY names") || !strings.Contains(r.stderr, "blauth: hint: ") {
			t.Errorf("want exit 127 and a hint, got %s", r)
		}
	})
}
