package main

import (
	"bufio"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/sources/blconfig"
)

// TestDeviceLogin runs `blauth-helper login WORKSPACE` as a user would: it prints where to go and
// the code, waits while the daemon polls, and ends once the code is approved, with the session
// saved where bl saves it.
func TestDeviceLogin(t *testing.T) {
	api := newAPI(t)
	td := startDaemon(t, daemonOpts{api: api})
	pr, pw := io.Pipe()
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var out strings.Builder
		code := run(ctx, []string{"login", "fresh"}, testSystem(ctx, strings.NewReader(""), &out, pw))
		pw.Close()
		done <- result{code: code, stdout: out.String()}
	}()
	var shown []string
	sc := bufio.NewScanner(pr)
	approved := false
	for sc.Scan() {
		line := sc.Text()
		shown = append(shown, line)
		if _, c, ok := strings.Cut(line, "shows the code: "); ok && !approved {
			if !api.ApproveDevice(strings.TrimSpace(c), true) {
				t.Fatalf("the code %q is not one the API issued", c)
			}
			approved = true
		}
	}
	r := <-done
	stderr := strings.Join(shown, "\n")
	if r.code != 0 || !approved {
		t.Fatalf("login: exit %d, approved %v, stderr:\n%s", r.code, approved, stderr)
	}
	if !strings.Contains(stderr, api.URL+"/device?user_code=") || !strings.Contains(stderr, "logged in to fresh") {
		t.Fatalf("the helper did not show the address and the outcome:\n%s", stderr)
	}
	c, err := blconfig.Read(filepath.Join(td.Home, ".blaxel", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	w, ok := c.Workspace("fresh")
	if !ok || w.Credentials.RefreshToken == "" {
		t.Fatalf("no session saved: %+v", c)
	}
	if r := runHelper(t, "", "token", "fresh"); r.code != 0 || strings.TrimSpace(r.stdout) != w.Credentials.AccessToken {
		t.Fatalf("the new session is not served: %s", r)
	}
}
