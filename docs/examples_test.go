// Package docs_test runs the shell examples of README.md and docs/*.md that are marked as
// runnable, so that what the docs show keeps working.
//
// The convention: a fenced block whose info string is "sh test" is run by bash (with -e and
// -o pipefail) and must exit 0. When the next fenced block's info string is "text output", it is
// the block's standard output, line for line; "…" in a line stands for any text within it (a
// token, a pid, a path), and a line of just "…" for any number of lines. Other blocks are not run: mark only what can run on a bare machine.
//
// The blocks of one file run in order, each in its own bash (in its own process group, killed
// when the block ends, so that nothing it started in the background outlives it), in one world: a HOME, XDG
// directories and a project directory (the working directory) in a temporary directory, the
// binaries built from this tree first on PATH, no D-Bus session bus (so no keyring, as on a
// server or in CI), and a fake Blaxel API (internal/testkit/blaxeltest) that every
// https://api.blaxel.ai/v0 in a block is pointed at. The world is what a user has after
// `bl login my-workspace` and a few more workspaces in ~/.blaxel/config.yaml:
//
//	my-workspace  a bl login session (the bl context)
//	acme          a service account (client_credentials)
//	acme-prod     an API key, bl_FAKE_acme_prod
//	acme-ci       an API key, bl_FAKE_acme_ci
//
// No daemon runs at first: the first blauth-helper command starts one, as on a new machine (it
// is given BL_API_URL, so that it too talks to the fake, never to Blaxel). It is stopped when
// the file is done.
package docs_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

// binDir holds blauthd, blauth-helper and blauth-proxy, built from the tree by TestMain.
var binDir string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "bdocbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator), "./cmd/blauthd", "./cmd/blauth-helper", "./cmd/blauth-proxy")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the binaries: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// block is one runnable example.
type block struct {
	file   string
	line   int // of the opening fence
	script string
	want   []string // the expected standard output's lines; nil when the doc shows none
}

var fence = regexp.MustCompile("^(\\s*)(```+|~~~+)\\s*(.*?)\\s*$")

// extract returns the runnable blocks of a Markdown file, in order.
func extract(path string) ([]block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type fenced struct {
		info  string
		line  int
		lines []string
	}
	var all []fenced
	var cur *fenced
	var indent, marker string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		m := fence.FindStringSubmatch(text)
		switch {
		case cur == nil && m != nil:
			cur, indent, marker = &fenced{info: m[3], line: n}, m[1], m[2]
		case cur != nil && m != nil && m[3] == "" && strings.HasPrefix(m[2], marker):
			all = append(all, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, strings.TrimPrefix(text, indent))
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("%s:%d: a fenced block is not closed", path, cur.line)
	}
	var out []block
	for i, f := range all {
		if f.info != "sh test" {
			continue
		}
		b := block{file: filepath.Base(path), line: f.line, script: strings.Join(f.lines, "\n") + "\n"}
		if i+1 < len(all) && all[i+1].info == "text output" {
			b.want = all[i+1].lines
			if b.want == nil {
				b.want = []string{}
			}
		}
		out = append(out, b)
	}
	return out, nil
}

// TestDocsExamples runs every marked block of README.md and docs/*.md.
func TestDocsExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join("..", "README.md")}, files...)
	total := 0
	for _, f := range files {
		blocks, err := extract(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(blocks) == 0 {
			continue
		}
		total += len(blocks)
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			for _, b := range blocks {
				w.run(t, b)
			}
		})
	}
	// The docs hold this many runnable examples at least: fewer means the convention broke.
	if total < 12 {
		t.Errorf("found %d runnable examples in README.md and docs/*.md, want 12 or more", total)
	}
}

// world is the machine one file's examples run on.
type world struct {
	dir, home, work string
	api             *blaxeltest.Server
	env             []string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	dir := testkit.ShortTempDir(t, "bdoc")
	w := &world{dir: dir, home: filepath.Join(dir, "home"), work: filepath.Join(dir, "work"), api: blaxeltest.New(0)}
	t.Cleanup(w.api.Close)
	for _, d := range []string{"home/.blaxel", "run", "config", "cache", "data", "tmp", "work", "bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	access, refresh := w.api.NewSession("user-my-workspace", "FAKE-device-code")
	w.api.BindSession("user-my-workspace", "my-workspace")
	w.api.AddAPIKey("bl_FAKE_acme_prod", "acme-prod")
	w.api.AddAPIKey("bl_FAKE_acme_ci", "acme-ci")
	cc := w.api.AddClient("acme-sa", "FAKE-secret")
	blConfig := fmt.Sprintf(`context:
  workspace: my-workspace
workspaces:
- name: my-workspace
  credentials:
    access_token: %s
    refresh_token: %s
    expires_in: 7200
    device_code: FAKE-device-code
- name: acme
  credentials:
    client_credentials: "%s"
- name: acme-prod
  credentials:
    apiKey: "bl_FAKE_acme_prod"
- name: acme-ci
  credentials:
    apiKey: "bl_FAKE_acme_ci"
tracking: false
`, access, refresh, cc)
	write(t, filepath.Join(w.home, ".blaxel", "config.yaml"), blConfig, 0o600)
	// The daemon the helper starts talks to the fake: a daemon started by systemd would get
	// BL_API_URL from the user manager's environment the same way.
	wrapper := filepath.Join(dir, "bin", "blauthd")
	write(t, wrapper, fmt.Sprintf("#!/bin/sh\nBL_API_URL='%s' exec '%s' \"$@\"\n", w.api.Base, filepath.Join(binDir, "blauthd")), 0o700)
	w.env = []string{
		"PATH=" + filepath.Join(dir, "bin") + string(os.PathListSeparator) + binDir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + w.home, "USER=" + os.Getenv("USER"), "LANG=C.UTF-8", "TERM=dumb",
		"XDG_RUNTIME_DIR=" + filepath.Join(dir, "run"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"), "XDG_DATA_HOME=" + filepath.Join(dir, "data"),
		"TMPDIR=" + filepath.Join(dir, "tmp"), "BLAUTH_DAEMON=" + wrapper,
		"GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "PYTHONDONTWRITEBYTECODE=1", "DO_NOT_TRACK=1",
		// Nothing leaves the machine: a request to anything but the loopback fake fails here.
		"HTTPS_PROXY=http://127.0.0.1:9", "https_proxy=http://127.0.0.1:9", "HTTP_PROXY=http://127.0.0.1:9",
		"http_proxy=http://127.0.0.1:9", "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost",
	}
	t.Cleanup(func() { w.stopDaemon(t) })
	return w
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func (w *world) log() string {
	b, _ := os.ReadFile(filepath.Join(w.dir, "run", "blauth", "blauthd.log"))
	return string(b)
}

// run runs one block and checks its exit status and, when the doc shows it, its output.
func (w *world) run(t *testing.T, b block) {
	t.Helper()
	script := strings.ReplaceAll(b.script, "https://api.blaxel.ai/v0", w.api.Base)
	path := filepath.Join(w.dir, "tmp", fmt.Sprintf("%s-%d.sh", b.file, b.line))
	write(t, path, script, 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-e", "-o", "pipefail", path)
	cmd.Dir, cmd.Env = w.work, w.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		// Nothing a block started in the background outlives it (a watch, say).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	where := fmt.Sprintf("%s:%d", b.file, b.line)
	report := fmt.Sprintf("the example:\n%s\nstdout:\n%s\nstderr:\n%s\nblauthd.log:\n%s", b.script, stdout.String(), stderr.String(), w.log())
	switch {
	case ctx.Err() != nil:
		t.Errorf("%s did not finish within a minute\n%s", where, report)
	case err != nil:
		t.Errorf("%s: %v\n%s", where, err, report)
	case b.want != nil:
		if msg := compare(b.want, stdout.String()); msg != "" {
			t.Errorf("%s: the output is not what the doc shows: %s\n%s", where, msg, report)
		}
	}
}

// compare checks output against the expected lines: "…" in a line matches any text within it,
// and a line that is only "…" matches any number of lines (output that differs between
// versions of a tool, say). It returns what differs, or "".
func compare(want []string, output string) string {
	got := strings.Split(strings.TrimRight(output, "\n"), "\n")
	if output == "" {
		got = nil
	}
	for len(want) > 0 && strings.TrimSpace(want[len(want)-1]) == "" {
		want = want[:len(want)-1]
	}
	if matchLines(want, got) {
		return ""
	}
	// Name the first line that differs, as far as the lines match one to one.
	for i := range min(len(want), len(got)) {
		if strings.TrimSpace(want[i]) != "…" && !lineMatches(want[i], got[i]) {
			return fmt.Sprintf("line %d is %q, want %q", i+1, got[i], want[i])
		}
	}
	return fmt.Sprintf("%d lines, want %d:\n%s", len(got), len(want), strings.Join(want, "\n"))
}

func matchLines(want, got []string) bool {
	switch {
	case len(want) == 0:
		return len(got) == 0
	case strings.TrimSpace(want[0]) == "…":
		for skip := 0; skip <= len(got); skip++ {
			if matchLines(want[1:], got[skip:]) {
				return true
			}
		}
		return false
	case len(got) == 0:
		return false
	}
	return lineMatches(want[0], got[0]) && matchLines(want[1:], got[1:])
}

// lineMatches reports whether a line of output is what the doc shows, "…" matching any text.
func lineMatches(want, got string) bool {
	parts := strings.Split(strings.TrimRight(want, " "), "…")
	for j := range parts {
		parts[j] = regexp.QuoteMeta(parts[j])
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$").MatchString(strings.TrimRight(got, " "))
}

// stopDaemon stops the daemon a block started, and checks that it is gone.
func (w *world) stopDaemon(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ping := exec.CommandContext(ctx, filepath.Join(binDir, "blauth-helper"), "ping")
	ping.Env = append(w.env, "BLAUTH_NO_SPAWN=1")
	out, err := ping.Output()
	if err != nil {
		return // none runs
	}
	var pid int
	if _, err := fmt.Sscanf(string(out[bytes.Index(out, []byte("(pid ")):]), "(pid %d)", &pid); err != nil || pid <= 1 {
		t.Errorf("ping answered %q", out)
		return
	}
	stop := exec.CommandContext(ctx, filepath.Join(binDir, "blauth-helper"), "stop")
	stop.Env = append(w.env, "BLAUTH_NO_SPAWN=1")
	if out, err := stop.CombinedOutput(); err != nil {
		t.Errorf("blauth-helper stop: %v: %s", err, out)
	}
	if !testkit.Eventually(15*time.Second, func() bool { return syscall.Kill(pid, 0) != nil || zombie(pid) }) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("the daemon (pid %d) still ran after blauth-helper stop", pid)
	}
}

// zombie reports whether pid has exited and waits for its parent (init) to reap it.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}
