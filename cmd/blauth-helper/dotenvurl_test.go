package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exec and exec --proxy refuse a directory whose .env sets BL_API_URL or BL_RUN_URL: Blaxel's
// SDKs let the .env win, so the command would send the token to that URL, or go around the
// proxy. The refusal names the file and the line; nothing runs.
func TestExecRefusesADotenvThatRedirects(t *testing.T) {
	td := startDaemon(t, daemonOpts{blConfig: "context:\n  workspace: other\nworkspaces:\n- name: other\n  credentials:\n    apiKey: \"other-key\"\ntracking: false\n"})
	project := func(content string) string {
		dir := shortTempDir(t)
		if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	run := func(dir string, args ...string) result {
		t.Helper()
		return runProc(t, proc{env: append(td.SocketEnv(), "BLAUTH_PROXY=/nonexistent/blauth-proxy"), dir: dir}, helperBin(),
			append(args, "--", "sh", "-c", `touch ran; printf '%s' "$BL_API_KEY"`)...)
	}
	for _, tc := range []struct {
		name, env, args, want string
	}{
		{"BL_API_URL", "# the project\nBL_WORKSPACE=other\nBL_API_URL=http://127.0.0.1:9/v0\n", "exec", ".env line 3 sets BL_API_URL"},
		{"BL_RUN_URL", "BL_RUN_URL=http://127.0.0.1:9/run\n", "exec", ".env line 1 sets BL_RUN_URL"},
		{"BL_API_URL behind the proxy", "BL_API_URL=http://127.0.0.1:9/v0\n", "exec --proxy", "around the proxy"},
		{"BL_RUN_URL behind the proxy", "\n\nBL_RUN_URL=http://127.0.0.1:9/run\n", "exec --proxy", ".env line 3 sets BL_RUN_URL"},
		{"the .env's own key and URL behind the proxy", "BL_API_KEY=dotenv-key\nBL_API_URL=http://127.0.0.1:9/v0\n", "exec --proxy", ".env line 2 sets BL_API_URL"},
		{"another workspace, with its line", "# x\nBL_WORKSPACE=mine\n", "-w other exec", ".env line 2 sets BL_WORKSPACE=mine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := project(tc.env)
			r := run(dir, strings.Fields(tc.args)...)
			mustFail(t, r, exitUsage)
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, filepath.Join(dir, ".env")) {
				t.Fatalf("stderr %q: want %q and the file", r.stderr, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
				t.Fatal("the command ran")
			}
		})
	}
	// The .env's own key with its own URL, without the proxy: the token served is that key, for
	// that URL, as the SDK reading the .env would use them. Allowed.
	dir := project("BL_API_KEY=dotenv-key\nBL_API_URL=http://127.0.0.1:9/v0\n")
	if r := run(dir, "-w", "other", "exec"); r.code != 0 || r.stdout != "dotenv-key" {
		t.Fatalf("exec with the .env's own key and URL: %s", r)
	}
}
