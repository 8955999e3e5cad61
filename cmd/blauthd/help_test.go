package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// --help reads like a mature tool's: what blauthd is, every flag as it is typed (--name) with
// its default, the environment, the files, the exit statuses and where the docs are. The flag
// list comes from the flag set itself, so a new flag without a line fails here.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{arg}, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
			t.Fatalf("%s: exit %d, stderr %q", arg, code, stderr.String())
		}
		help := stdout.String()
		for _, name := range definedFlags() {
			if !strings.Contains(help, "  --"+name+" ") && !strings.Contains(help, "  --"+name+"\n") {
				t.Errorf("%s does not list --%s", arg, name)
			}
		}
		for _, want := range []string{"per-user credential daemon", "Usage:\n  blauthd [FLAGS]", "\nEnvironment:\n", "BLAUTH_NO_KEYRING", "BLAUTH_SOCKET",
			"\nFiles:\n", "$XDG_CONFIG_HOME/blauth/config.yaml", ".blaxel/config.yaml", "\nExit status:\n", "  2 ", "  3 ", "Docs:", "OPERATIONS.md",
			"(default 30s)", "(default 0.6)", "(default info)", "(default 3s)"} {
			if !strings.Contains(help, want) {
				t.Errorf("%s does not say %q", arg, want)
			}
		}
		if strings.Contains(help, "\n  -socket") || strings.Contains(help, "Usage of") {
			t.Errorf("%s: single-dash flag names or the flag package's own usage:\n%s", arg, help)
		}
		for _, line := range strings.Split(help, "\n") {
			if len(line) > 100 {
				t.Errorf("%s: line over 100 columns: %q", arg, line)
			}
		}
	}
	for _, d := range flagDocs {
		for _, f := range d {
			if newFlagSet(&options{}).Lookup(f.name) == nil {
				t.Errorf("--help lists --%s, which is not a flag", f.name)
			}
		}
	}
}

// A bad flag is one line that says what is wrong, and one that says where the flags are: not
// the whole usage.
func TestBadFlagIsOneLine(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--foo"}, "blauthd: error: unknown flag --foo\n"},
		{[]string{"--no-keyrnig"}, "blauthd: error: unknown flag --no-keyrnig; did you mean --no-keyring?\n"},
		{[]string{"-socket"}, "blauthd: error: a value is missing after --socket\n"},
		{[]string{"--min-ttl", "soon"}, "blauthd: error: invalid value \"soon\" for flag --min-ttl: parse error\n"},
		{[]string{"--no-keyring=maybe"}, "blauthd: error: invalid boolean value \"maybe\" for --no-keyring: parse error\n"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		lines := strings.SplitAfter(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if code != 2 || stdout.Len() != 0 || len(lines) != 2 || lines[0] != tt.want || !strings.Contains(lines[1], "blauthd --help") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q then the way to --help", tt.args, code, stdout.String(), stderr.String(), tt.want)
		}
	}
}

// blauth's config file is read at start; a mistake in it stops the start (exit 2) with the
// file, the line and what to write instead, before any socket is made.
func TestConfigFileMistakesStopTheStart(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "run", "blauthd.sock")
	for name, tt := range map[string]struct{ content, want string }{
		"unknown key": {"keyring: false\nno_keyring: true\n", `line 2: unknown key "no_keyring"; the keys blauthd reads are: keyring`},
		"typo":        {"keyrig: false\n", `line 1: unknown key "keyrig" (did you mean "keyring"?)`},
		"bad YAML":    {"keyring: [false\n", "not valid YAML"},
		"bad value":   {"keyring: nope\n", "line 1: keyring must be true or false"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
			if err := os.WriteFile(cfg, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			code := run([]string{"--config", cfg, "--socket", socket, "--log-format", "json"}, io.Discard, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), cfg) || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 naming %s and saying %q", code, stderr.String(), cfg, tt.want)
			}
		})
	}
	var stderr bytes.Buffer
	if code := run([]string{"--config", filepath.Join(dir, "none.yaml"), "--socket", socket}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "none.yaml: no such file") {
		t.Errorf("a --config that does not exist: exit %d, %q", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Dir(socket)); !os.IsNotExist(err) {
		t.Errorf("the socket directory was made before the settings were checked: %v", err)
	}
}

// The keyring is turned off by the flag, by BLAUTH_NO_KEYRING (which a daemon started by the
// helper or by socket activation inherits) or by keyring: false in the config file, and the
// daemon is told why.
func TestKeyringOffSettings(t *testing.T) {
	dir := t.TempDir()
	off := filepath.Join(dir, "off.yaml")
	on := filepath.Join(dir, "on.yaml")
	if err := os.WriteFile(off, []byte("keyring: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(on, []byte("keyring: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  string
		want string // KeyringOff; "" keeps the keyring
	}{
		{"default", nil, "", ""},
		{"flag", []string{"--no-keyring"}, "", "--no-keyring was given"},
		{"environment", nil, "1", "BLAUTH_NO_KEYRING=1 is set"},
		{"environment says no", nil, "0", ""},
		{"config file", []string{"--config", off}, "", "keyring: false in " + off},
		{"config file on, environment off", []string{"--config", on}, "true", "BLAUTH_NO_KEYRING=true is set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(noKeyringEnv, tt.env)
			o, err := parseFlags(append([]string{"--config", on}, tt.args...))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := o.config(zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if cfg.KeyringOff != tt.want || cfg.OSKeyring != (tt.want == "") {
				t.Errorf("OSKeyring %v, KeyringOff %q; want %q", cfg.OSKeyring, cfg.KeyringOff, tt.want)
			}
		})
	}
	t.Setenv(noKeyringEnv, "please")
	var stderr bytes.Buffer
	if code := run([]string{"--config", on, "--socket", filepath.Join(dir, "s", "blauthd.sock")}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), `BLAUTH_NO_KEYRING="please"`) {
		t.Errorf("BLAUTH_NO_KEYRING=please: exit %d, %q; want 2 naming it", code, stderr.String())
	}
}
