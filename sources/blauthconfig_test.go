package sources

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadBlauthConfig(t *testing.T) {
	tests := []struct {
		name, content string
		keyring       *bool // want
		err           []string
	}{
		{"empty", "", nil, nil},
		{"comments only", "# nothing set\n", nil, nil},
		{"keyring off", "keyring: false\n", ptr(false), nil},
		{"keyring on", "# the default\nkeyring: true\n", ptr(true), nil},
		{"unknown key", "keyring: false\nkeyrnig: true\n", nil, []string{"line 2", `unknown key "keyrnig"`, `(did you mean "keyring"?)`, "the keys blauthd reads are: keyring"}},
		{"unrelated key", "routez: []\n", nil, []string{"line 1", `unknown key "routez"`, "keyring"}},
		{"not YAML", "keyring: false\n  bad: [\n", nil, []string{"line", "not valid YAML"}},
		{"not a mapping", "- keyring\n", nil, []string{"line 1", "must be a mapping"}},
		{"not a boolean", "keyring: off-ish\n", nil, []string{"line 1", "keyring must be true or false"}},
		{"quoted boolean", "keyring: \"false\"\n", nil, []string{"keyring must be true or false"}},
		{"twice", "keyring: true\nkeyring: false\n", nil, []string{"line 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := ReadBlauthConfig(path, true)
			if tt.err != nil {
				if !errors.Is(err, ErrBlauthConfig) || !strings.Contains(err.Error(), path) {
					t.Fatalf("err = %v; want ErrBlauthConfig naming %s", err, path)
				}
				for _, w := range tt.err {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("err = %q; want it to say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (c.Keyring == nil) != (tt.keyring == nil) || c.Keyring != nil && *c.Keyring != *tt.keyring {
				t.Errorf("keyring = %v, want %v", c.Keyring, tt.keyring)
			}
			if c.Path != path {
				t.Errorf("path = %q", c.Path)
			}
		})
	}
}

func TestReadBlauthConfigRefuses(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.yaml")
	if c, err := ReadBlauthConfig(missing, true); err != nil || c.Keyring != nil {
		t.Errorf("a missing default file: %v %v; want the defaults", c, err)
	}
	if _, err := ReadBlauthConfig(missing, false); !errors.Is(err, ErrBlauthConfig) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("a missing file named on the command line: %v", err)
	}
	open := filepath.Join(dir, "open.yaml")
	if err := os.WriteFile(open, []byte("keyring: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBlauthConfig(open, true); !errors.Is(err, ErrBlauthConfig) || !strings.Contains(err.Error(), "another user may write it") {
		t.Errorf("a world-writable file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", MaxBlauthConfigBytes)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBlauthConfig(big, true); !errors.Is(err, ErrBlauthConfig) || !errors.Is(err, ErrFileRefused) {
		t.Errorf("a file over the cap: %v", err)
	}
	if _, err := ReadBlauthConfig(dir, true); !errors.Is(err, ErrBlauthConfig) || !errors.Is(err, ErrFileRefused) {
		t.Errorf("a directory: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// A DBUS_SESSION_BUS_ADDRESS naming a bus that is not there (a stale address in a container,
// a session that ended) is no session bus: the daemon runs without the keyring and says so.

// run_domains: is a list of host names, kept in lower case; anything else names its line.
func TestReadBlauthConfigRunDomains(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    []string
		err     string
	}{
		{"run_domains:\n  - Sandboxes.Example.COM\n  - 127.0.0.1\n", []string{"sandboxes.example.com", "127.0.0.1"}, ""},
		{"run_domains: []\n", nil, ""},
		{"run_domains: sandboxes.example.com\n", nil, "line 1: run_domains must be a list of host names"},
		{"run_domains:\n  - a.example.com,b.example.com\n", nil, "line 2: each of run_domains must be one host name"},
		{"run_domains:\n  - ok.example.com\n  - com\n", nil, "line 3: the run domain \"com\" is a single label"},
		{"run_domains:\n  - https://x.example.com\n", nil, "line 2: the run domain"},
		{"run_domains:\n  - 443\n", nil, "line 2: each of run_domains must be one host name, as a string"},
		{"run_domains:\n  - \"\"\n", nil, "line 2: an empty run domain"},
	} {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := ReadBlauthConfig(path, false)
		if tc.err != "" {
			if !errors.Is(err, ErrBlauthConfig) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v; want an error saying %q", tc.content, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(c.RunDomains, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%q: %q, %v; want %q", tc.content, c.RunDomains, err, tc.want)
		}
	}
}
