package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// blauth-proxy exec, run directly, refuses a directory whose .env sets BL_RUN_URL or
// BL_API_URL (the child would read it and go around the proxy), naming the file and line.
func TestExecRefusesADotenvThatGoesAroundTheProxy(t *testing.T) {
	env := proxyEnv(t)
	// The .env names the fake API itself (elsewhere, its exchange would fail first): the child
	// would still reach it directly rather than through the proxy.
	var base string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "BL_API_URL="); ok {
			base = v
		}
	}
	for _, name := range []string{"BL_RUN_URL", "BL_API_URL"} {
		dir, err := os.MkdirTemp("", "bpenv")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("# project\n"+name+"="+base+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "exec", "--", "sh", "-c", "touch ran")
		cmd.Env, cmd.Dir = env, dir
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), filepath.Join(dir, ".env")+" line 2 sets "+name) {
			t.Errorf("%s: exit %d, %q; want 2 naming the file and line", name, code, out)
		}
		if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
			t.Errorf("%s: the command ran", name)
		}
	}
}
