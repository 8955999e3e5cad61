//go:build real

// These tests talk to a real Secret Service (gnome-keyring) through go-keyring. Run them in a
// throwaway keyring:
//
//	.ci/with-keyring.sh go test -tags real ./sources/keyring/ -run Keyring -v
//
// They fail, never skip, when the keyring is missing: a skipped test would hide a broken CI.

package keyring

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/ipc"
)

const runUnderScript = "run the real keyring tests under .ci/with-keyring.sh, which starts a private, unlocked gnome-keyring: " +
	".ci/with-keyring.sh go test -tags real ./sources/keyring/ -run Keyring -v"

// realKeyring returns a Keyring on the real Secret Service, after checking that it is the
// throwaway one .ci/with-keyring.sh sets up (these tests write and delete items under service
// "blauth") and that it answers.
func realKeyring(t *testing.T) *Keyring {
	t.Helper()
	home := os.Getenv("BLAUTH_TEST_KEYRING_HOME")
	if home == "" || home != os.Getenv("HOME") {
		t.Fatalf("not in a throwaway keyring (BLAUTH_TEST_KEYRING_HOME=%q, HOME=%q), refusing to touch the user's keyring; %s",
			home, os.Getenv("HOME"), runUnderScript)
	}
	if os.Getenv("DBUS_SESSION_BUS_ADDRESS") == "" {
		t.Fatalf("DBUS_SESSION_BUS_ADDRESS is not set; %s", runUnderScript)
	}
	k := &Keyring{Log: zerolog.New(zerolog.NewTestWriter(t))}
	if err := k.Probe(context.Background()); err != nil {
		t.Fatalf("the Secret Service cannot be reached: %v; %s", err, runUnderScript)
	}
	return k
}

// secretTool runs secret-tool with args and returns its stdout and stderr (it prints an item's
// attributes on stderr).
func secretTool(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	if _, err := exec.LookPath("secret-tool"); err != nil {
		t.Fatalf("secret-tool not found (apt-get install libsecret-tools): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errb strings.Builder
	cmd := exec.CommandContext(ctx, "secret-tool", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		// secret-tool lookup exits 1, silently, when nothing matches.
		if !errors.As(err, &exit) || errb.Len() > 0 {
			t.Fatalf("secret-tool %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
	}
	return out.String(), errb.String()
}

// lines returns the "key = value" lines of secret-tool's output as a multiset.
func lines(s string) map[string]int {
	m := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		m[strings.TrimSpace(sc.Text())]++
	}
	return m
}

func TestKeyringRealRoundTrip(t *testing.T) {
	ctx := context.Background()
	k := realKeyring(t)
	prod := Secret{Kind: ipc.KindAPIKey, Value: "bl_FAKEKEY-real-" + time.Now().Format("150405.000000")}
	sa := Secret{Kind: ipc.KindClientCredentials, Value: "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="}
	workspaces := map[string]Secret{"acme-prod": prod, "acme-sa": sa}
	t.Cleanup(func() {
		for ws := range workspaces {
			_ = k.Delete(context.Background(), ws)
		}
	})

	for ws, s := range workspaces {
		if err := k.Set(ctx, ws, s); err != nil {
			t.Fatalf("Set(%q): %v", ws, err)
		}
	}
	for ws, want := range workspaces {
		if got, err := k.Get(ctx, ws); err != nil || got != want {
			t.Errorf("Get(%q) = %v, %v; want %v", ws, got, err, want)
		}
	}
	if names, err := k.List(ctx); err != nil || strings.Join(names, ",") != "acme-prod,acme-sa" {
		t.Errorf("List = %q, %v; want [acme-prod acme-sa]", names, err)
	}

	// What any other tool sees: one item per workspace with attributes service and username,
	// holding the JSON item, and the index.
	out, attrs := secretTool(t, "search", "--all", "service", "blauth")
	all := lines(out + "\n" + attrs)
	for ws, s := range workspaces {
		if all["secret = "+encodeKeyringItem(s)] != 1 {
			t.Errorf("secret-tool search does not show the item of %s:\n%s%s", ws, out, attrs)
		}
		if all["attribute.username = "+ws] != 1 {
			t.Errorf("secret-tool search does not show username %s:\n%s", ws, attrs)
		}
	}
	if all["attribute.service = blauth"] != 3 { // two workspaces and the index
		t.Errorf("secret-tool search shows %d items with service blauth, want 3:\n%s", all["attribute.service = blauth"], attrs)
	}
	// The item found by its attributes is the one Get decodes.
	for ws, s := range workspaces {
		out, attrs := secretTool(t, "search", "--all", "service", "blauth", "username", ws)
		item := lines(out + "\n" + attrs)
		if item["attribute.service = blauth"] != 1 || item["attribute.username = "+ws] != 1 {
			t.Errorf("attributes of %s:\n%s", ws, attrs)
		}
		if item["secret = "+encodeKeyringItem(s)] != 1 {
			t.Errorf("secret of %s: got\n%s", ws, out)
		}
		got, err := decodeKeyringItem(strings.TrimSuffix(secretToolLookup(t, ws), "\n"))
		if err != nil || got != s {
			t.Errorf("secret-tool lookup of %s decodes to %v, %v; want %v", ws, got, err, s)
		}
	}
	if index := secretToolLookup(t, ".index"); strings.TrimSpace(index) != `["acme-prod","acme-sa"]` {
		t.Errorf("index item = %q", index)
	}

	// Overwrite, with the other kind: still one item.
	repl := Secret{Kind: ipc.KindClientCredentials, Value: "bmV3LWlkOm5ldy1zZWNyZXQ="}
	if err := k.Set(ctx, "acme-prod", repl); err != nil {
		t.Fatal(err)
	}
	workspaces["acme-prod"] = repl
	if got, err := k.Get(ctx, "acme-prod"); err != nil || got != repl {
		t.Errorf("Get after overwrite = %v, %v; want %v", got, err, repl)
	}
	out, attrs = secretTool(t, "search", "--all", "service", "blauth", "username", "acme-prod")
	if n := lines(attrs)["attribute.username = acme-prod"]; n != 1 {
		t.Errorf("%d items for acme-prod after an overwrite, want 1:\n%s", n, attrs)
	}
	if strings.Contains(out, prod.Value) {
		t.Errorf("the old secret is still stored:\n%s", out)
	}

	for ws := range workspaces {
		if err := k.Delete(ctx, ws); err != nil {
			t.Fatalf("Delete(%q): %v", ws, err)
		}
		if _, err := k.Get(ctx, ws); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) after Delete: %v; want ErrNotFound", ws, err)
		}
		if err := k.Delete(ctx, ws); !errors.Is(err, ErrNotFound) {
			t.Errorf("second Delete(%q): %v; want ErrNotFound", ws, err)
		}
	}
	if names, err := k.List(ctx); err != nil || len(names) != 0 {
		t.Errorf("List after deleting all = %q, %v", names, err)
	}
	if out, attrs := secretTool(t, "search", "--all", "service", "blauth"); strings.Contains(out+attrs, "blauth") {
		t.Errorf("items left under service blauth:\n%s%s", out, attrs)
	}
	if err := k.Probe(ctx); err != nil {
		t.Errorf("Probe: %v", err)
	}
}

func secretToolLookup(t *testing.T, user string) string {
	t.Helper()
	out, _ := secretTool(t, "lookup", "service", "blauth", "username", user)
	return out
}

// The unavailable cases run in a child process: go-keyring shares one session-bus connection per
// process, so pointing DBUS_SESSION_BUS_ADDRESS elsewhere only takes effect in a fresh process.
const realChildEnv = "BLAUTH_KEYRING_REAL_CHILD"

func TestKeyringRealUnavailable(t *testing.T) {
	realKeyring(t) // the same preconditions as the other real tests

	// A socket that accepts connections and never answers: the D-Bus handshake hangs.
	dir := t.TempDir()
	silent := filepath.Join(dir, "silent.sock")
	ln, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	defer func() {
		ln.Close()
		for {
			select {
			case c := <-accepted:
				c.Close()
			default:
				return
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c: // held open, unanswered, until the test ends
			default:
				c.Close()
			}
		}
	}()

	tests := []struct {
		name, scenario, bus string
		script              bool // run the child in its own keyring, via .ci/with-keyring.sh
	}{
		{"no bus socket", "absent", "unix:path=" + filepath.Join(dir, "nonexistent", "bus"), false},
		{"bus never answers", "silent", "unix:path=" + silent, false},
		{"collection locked", "locked", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			args := []string{"-test.run=^TestKeyringRealUnavailableChild$", "-test.v", "-test.count=1"}
			var cmd *exec.Cmd
			if tt.script {
				script, err := filepath.Abs(filepath.Join("..", "..", ".ci", "with-keyring.sh"))
				if err != nil {
					t.Fatal(err)
				}
				cmd = exec.CommandContext(ctx, script, append([]string{os.Args[0]}, args...)...)
			} else {
				cmd = exec.CommandContext(ctx, os.Args[0], args...)
			}
			cmd.Env = append(os.Environ(), realChildEnv+"="+tt.scenario)
			if tt.bus != "" {
				cmd.Env = append(cmd.Env, "DBUS_SESSION_BUS_ADDRESS="+tt.bus)
			}
			start := time.Now()
			out, err := cmd.CombinedOutput()
			t.Logf("child (%s) after %s:\n%s", tt.scenario, time.Since(start).Round(time.Millisecond), out)
			if err != nil {
				t.Fatalf("child: %v", err)
			}
			if !strings.Contains(string(out), "child checks passed") {
				t.Fatal("the child did not run its checks")
			}
		})
	}
}

// TestKeyringRealUnavailableChild is the child process of TestKeyringRealUnavailable; run on its
// own it does nothing.
func TestKeyringRealUnavailableChild(t *testing.T) {
	scenario := os.Getenv(realChildEnv)
	if scenario == "" {
		return
	}
	ctx := context.Background()
	const box = 500 * time.Millisecond
	k := &Keyring{Timeout: box, Log: zerolog.New(zerolog.NewTestWriter(t))}

	if scenario == "locked" {
		// In the child's own keyring: lock the login collection as a screen locker would.
		lock := exec.CommandContext(ctx, "dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.secrets",
			"/org/freedesktop/secrets", "org.freedesktop.Secret.Service.Lock",
			"array:objpath:/org/freedesktop/secrets/collection/login")
		if out, err := lock.CombinedOutput(); err != nil {
			t.Fatalf("locking the collection: %v\n%s", err, out)
		}
	}

	// Generous slack over the box: a slow machine must not fail this, a hang must.
	const slack = 20 * time.Second
	check := func(what string, call func() error) error {
		t.Helper()
		start := time.Now()
		err := call()
		elapsed := time.Since(start)
		t.Logf("%s after %s: %v", what, elapsed.Round(time.Millisecond), err)
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: %v; want ErrUnavailable", what, err)
		}
		if elapsed > box+slack {
			t.Errorf("%s took %s with a %s time box", what, elapsed, box)
		}
		return err
	}
	err := check("Probe", func() error { return k.Probe(ctx) })
	if scenario == "silent" && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Probe on a bus that never answers: %v; want a timeout", err)
	}
	check("Get", func() error { _, err := k.Get(ctx, "acme-prod"); return err })
	check("Set", func() error {
		return k.Set(ctx, "acme-prod", Secret{Kind: ipc.KindAPIKey, Value: "bl_FAKEKEY-unavailable"})
	})
	check("List", func() error { _, err := k.List(ctx); return err })
	if !t.Failed() {
		t.Log("child checks passed")
	}
}

// TestKeyringRealBusFromRuntimeDir: started without DBUS_SESSION_BUS_ADDRESS (as a service
// manager or the helper's auto-spawn may start blauthd) but with the session bus at
// $XDG_RUNTIME_DIR/bus, the keyring finds the real Secret Service there.
func TestKeyringRealBusFromRuntimeDir(t *testing.T) {
	realKeyring(t)
	addr := os.Getenv("DBUS_SESSION_BUS_ADDRESS")
	socket, ok := strings.CutPrefix(addr, "unix:path=")
	if !ok {
		t.Fatalf("the test bus address %q is not a unix:path= address", addr)
	}
	socket, _, _ = strings.Cut(socket, ",")
	runtimeDir := t.TempDir()
	if err := os.Symlink(socket, filepath.Join(runtimeDir, "bus")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKeyringRealBusFromRuntimeDirChild$", "-test.v", "-test.count=1")
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "DBUS_SESSION_BUS_ADDRESS" && k != "XDG_RUNTIME_DIR" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "XDG_RUNTIME_DIR="+runtimeDir, realChildEnv+"=runtime-dir")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil || !strings.Contains(string(out), "child checks passed") {
		t.Fatalf("child: %v", err)
	}
}

// TestKeyringRealBusFromRuntimeDirChild is the child of TestKeyringRealBusFromRuntimeDir.
func TestKeyringRealBusFromRuntimeDirChild(t *testing.T) {
	if os.Getenv(realChildEnv) != "runtime-dir" {
		return
	}
	ctx := context.Background()
	k := &Keyring{Log: zerolog.New(zerolog.NewTestWriter(t))}
	if err := k.Probe(ctx); err != nil {
		t.Fatalf("Probe through $XDG_RUNTIME_DIR/bus: %v", err)
	}
	s := Secret{Kind: ipc.KindAPIKey, Value: "bl_FAKEKEY-runtime-dir"}
	if err := k.Set(ctx, "acme-runtime-dir", s); err != nil {
		t.Fatal(err)
	}
	defer k.Delete(ctx, "acme-runtime-dir")
	if got, err := k.Get(ctx, "acme-runtime-dir"); err != nil || got != s {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if !t.Failed() {
		t.Log("child checks passed")
	}
}
