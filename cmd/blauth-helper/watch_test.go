package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/daemontest"
)

// configWithKey is a bl config whose only workspace, acme, holds key.
func configWithKey(key string) string {
	return "context:\n  workspace: acme\nworkspaces:\n- name: acme\n  credentials:\n    apiKey: \"" + key + "\"\ntracking: false\n"
}

// The shell user's watch: one line per token, the next as soon as it changes, through a daemon
// restart, and a clean exit on SIGINT.
func TestWatchPrintsEveryNewTokenAndReconnects(t *testing.T) {
	dir := shortTempDir(t)
	blPath := filepath.Join(dir, "home", ".blaxel", "config.yaml")
	if err := os.MkdirAll(filepath.Dir(blPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blPath, []byte(configWithKey("key-1")), 0o600); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "blauthd.sock")
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	d, err := daemon.New(ctx, daemon.Config{SocketPath: socket, BLConfigPath: blPath, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	go func() { first <- d.Run(ctx) }()

	cmd := exec.Command(helperBin(), "watch", "--json")
	cmd.Env = append(baseEnv(t), "BLAUTH_SOCKET="+socket, "BLAUTH_NO_SPAWN=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() map[string]any {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended; stderr %q", stderr.String())
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Fatalf("line %q is not JSON: %v", l, err)
			}
			return v
		case <-time.After(30 * time.Second):
			t.Fatalf("no line from watch; stderr %q", stderr.String())
		}
		return nil
	}
	if v := next(); v["token"] != "key-1" || v["workspace"] != "acme" || v["expiry"] != nil {
		t.Fatalf("first line %v", v)
	}
	if err := os.WriteFile(blPath, []byte(configWithKey("key-2")), 0o600); err != nil {
		t.Fatal(err)
	}
	if v := next(); v["token"] != "key-2" {
		t.Fatalf("after the change: %v", v)
	}
	// The daemon restarts: the watch reconnects to the new one by itself.
	cancel()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blPath, []byte(configWithKey("key-3")), 0o600); err != nil {
		t.Fatal(err)
	}
	daemontest.Start(t, daemontest.Options{Socket: socket, Mutate: func(c *daemon.Config) { c.BLConfigPath = blPath }})
	if v := next(); v["token"] != "key-3" {
		t.Fatalf("after the restart: %v", v)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	werr := make(chan error, 1)
	go func() { werr <- cmd.Wait() }()
	select {
	case err := <-werr:
		if err != nil {
			t.Fatalf("watch after SIGINT: %v; stderr %q", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not end on SIGINT")
	}
	if !strings.Contains(stderr.String(), "; waiting for a daemon (watch never starts one") {
		t.Errorf("the restart was not reported on stderr: %q", stderr.String())
	}
}
