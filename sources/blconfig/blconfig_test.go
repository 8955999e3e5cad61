package blconfig

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/blauth/blauth/sources"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestBLConfigGolden parses every testdata/blconfig/*.yaml, formats it with Marshal and compares the bytes
// with the .golden file beside it. A current-*.yaml input was written by the current writer, so its golden
// file must be the input itself.
func TestBLConfigGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "blconfig", "*.yaml"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse(data)
			if err != nil {
				t.Fatalf("ParseBLConfig: %v", err)
			}
			got := c.Marshal()
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *updateGolden {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestBLConfigGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Marshal differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
			if strings.HasPrefix(name, "current") && !bytes.Equal(got, data) {
				t.Errorf("Marshal of a current-format file is not the file itself:\n--- got\n%s--- want\n%s", got, data)
			}
			again, err := Parse(got)
			if err != nil {
				t.Fatalf("ParseBLConfig(Marshal()): %v", err)
			}
			if !reflect.DeepEqual(again, c) {
				t.Errorf("round trip:\n got %+v\nwant %+v", again, c)
			}
		})
	}
}

func TestParseBLConfigValues(t *testing.T) {
	tests := []struct {
		file string
		want *Config
	}{
		{"current.yaml", &Config{
			Context: Context{Workspace: "acme-prod"},
			Workspaces: []Workspace{
				{Name: "acme-prod", ID: "8b1d6c1e-0000-4000-8000-00000000abcd", Credentials: Credentials{
					AccessToken: "eyJhbGciOi…", RefreshToken: "FAKE-refresh", ExpiresIn: 7200, DeviceCode: "FAKE-device"}},
				{Name: "acme-ci", Credentials: Credentials{APIKey: "bl_FAKEKEY"}},
				{Name: "acme-sa", Credentials: Credentials{ClientCredentials: "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="}, Env: "dev"},
			},
		}},
		{"legacy-v2.yaml", &Config{
			Context: Context{Workspace: "acme-prod"},
			Workspaces: []Workspace{
				{Name: "acme-prod", Credentials: Credentials{
					AccessToken: "eyJhbGciOiJIUzI1NiJ9.e30.FAKE", RefreshToken: "FAKE-refresh", ExpiresIn: 7200, DeviceCode: "FAKE-device"}},
				{Name: "acme-sa", Credentials: Credentials{ClientCredentials: "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="}, Env: "dev"},
			},
			Tracking: true,
		}},
		{"legacy-v2-no-tracking.yaml", &Config{
			Context:    Context{Workspace: "acme-ci"},
			Workspaces: []Workspace{{Name: "acme-ci", Credentials: Credentials{APIKey: "bl_FAKEKEY"}}},
		}},
		{"legacy-v2-no-workspaces.yaml", &Config{}},
		{"current-empty.yaml", &Config{Tracking: true}},
		{"sdk-camelcase.yaml", &Config{
			Context: Context{Workspace: "acme-sa"},
			Workspaces: []Workspace{
				{Name: "acme-sa", Credentials: Credentials{ClientCredentials: "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="}, Env: "dev"},
				{Name: "acme-both", Credentials: Credentials{ClientCredentials: "from-snake"}},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "blconfig", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseBLConfigAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Config
	}{
		{"comments only", "# nothing yet\n", &Config{}},
		{"CRLF line ends", "context:\r\n  workspace: a\r\nworkspaces:\r\n- name: a\r\n  credentials:\r\n    apiKey: \"k\"\r\ntracking: false\r\n",
			&Config{Context: Context{Workspace: "a"}, Workspaces: []Workspace{{Name: "a", Credentials: Credentials{APIKey: "k"}}}}},
		{"null context and tracking", "context:\nworkspaces: []\ntracking:\n", &Config{}},
		{"no context", "workspaces: []\ntracking: true\n", &Config{Tracking: true}},
		{"numbers and booleans read as text", "workspaces:\n- name: 42\n  id: 7\n  credentials:\n    apiKey: true\ntracking: false\n",
			&Config{Workspaces: []Workspace{{Name: "42", ID: "7", Credentials: Credentials{APIKey: "true"}}}}},
		{"negative expires_in is zero", "workspaces:\n- name: a\n  credentials:\n    expires_in: -5\ntracking: false\n",
			&Config{Workspaces: []Workspace{{Name: "a"}}}},
		{"aliases", "x: &k bl_FAKE\nworkspaces:\n- name: a\n  credentials:\n    apiKey: *k\ntracking: false\n",
			&Config{Workspaces: []Workspace{{Name: "a", Credentials: Credentials{APIKey: "bl_FAKE"}}}}},
		{"flow style", "{context: {workspace: a}, workspaces: [{name: a, credentials: {apiKey: k}}], tracking: true}\n",
			&Config{Context: Context{Workspace: "a"}, Workspaces: []Workspace{{Name: "a", Credentials: Credentials{APIKey: "k"}}}, Tracking: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseBLConfigEmpty(t *testing.T) {
	for _, in := range []string{"", "\n", "  \n\t\r\n "} {
		c, err := Parse([]byte(in))
		if !errors.Is(err, ErrEmpty) {
			t.Errorf("ParseBLConfig(%q) error = %v, want ErrBLConfigEmpty", in, err)
		}
		if c == nil || !reflect.DeepEqual(c, &Config{}) {
			t.Errorf("ParseBLConfig(%q) config = %+v, want an empty config", in, c)
		}
	}
}

// blSecret stands for a credential in the rejected files below: no error may quote it.
const blSecret = "SECRET-VALUE-x9"

func TestParseBLConfigRejects(t *testing.T) {
	const head = "context:\n  workspace: a\nworkspaces:\n"
	tests := []struct {
		name string
		in   string
		line int
		torn bool // valid but maybe cut short: the config comes with ErrBLConfigMaybeTorn
	}{
		{"invalid YAML", "context: [\n  " + blSecret + "\n", 2, false},
		{"invalid YAML without a final newline", "context: [\n  " + blSecret, 2, false},
		{"bad escape", head + "- name: a\n  credentials:\n    apiKey: \"" + blSecret + "\\q\"\ntracking: false\n", 0, false},
		{"unknown anchor", head + "- name: a\n  credentials:\n    apiKey: *" + blSecret + "\ntracking: false\n", 0, false},
		{"control character", head + "- name: a\n  credentials:\n    apiKey: " + blSecret + "\x01\ntracking: false\n", 0, false},
		{"top level is a list", "- " + blSecret + "\n", 1, false},
		{"top level is a scalar", blSecret + "\n", 1, false},
		{"top level is null", "~\n", 1, false},
		{"no final newline", head + "- name: a\n  credentials:\n    apiKey: \"" + blSecret + "\"\ntracking: false", 7, true},
		{"cut mid-line", head + "- name: a\n  credentials:\n    access_token: " + blSecret[:4], 6, true},
		{"no workspaces key", "context:\n  workspace: a\n", 1, true},
		{"cut after workspaces", head, 3, true},
		{"cut after name", head + "- name: a\n", 4, true},
		{"cut after credentials", head + "- name: a\n  credentials:\n", 4, true},
		{"cut after a credential", head + "- name: a\n  credentials:\n    apiKey: \"" + blSecret + "\"\n", 4, true},
		{"cut inside legacy credentials", head + "- name: a\n  credentials:\n    apiKey: \"\"\n    access_token: " + blSecret + "\n", 4, true},
		{"entry without name", head + "- credentials:\n    apiKey: \"" + blSecret + "\"\ntracking: false\n", 4, false},
		{"entry with empty name", head + "- name: \"\"\n  credentials:\ntracking: false\n", 4, false},
		{"entry is a scalar", head + "- " + blSecret + "\ntracking: false\n", 4, false},
		{"name is a list", head + "- name: [" + blSecret + "]\n  credentials:\ntracking: false\n", 4, false},
		{"apiKey is a mapping", head + "- name: a\n  credentials:\n    apiKey: {k: " + blSecret + "}\ntracking: false\n", 6, false},
		{"expires_in not a number", head + "- name: a\n  credentials:\n    expires_in: " + blSecret + "\ntracking: false\n", 6, false},
		{"expires_in is a list", head + "- name: a\n  credentials:\n    expires_in: [1]\ntracking: false\n", 6, false},
		{"tracking not a boolean", head + "tracking: " + blSecret + "\n", 4, false},
		{"workspaces not a list", "workspaces: " + blSecret + "\ntracking: false\n", 1, false},
		{"context not a mapping", "context: " + blSecret + "\nworkspaces:\ntracking: false\n", 1, false},
		{"credentials not a mapping", head + "- name: a\n  credentials: " + blSecret + "\ntracking: false\n", 5, false},
		{"duplicate key", head + "- name: a\n  credentials:\n    apiKey: \"" + blSecret + "\"\n    apiKey: \"x\"\ntracking: false\n", 7, false},
		{"duplicate top-level key", "workspaces:\nworkspaces:\ntracking: false\n", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error = %v, want a *BLConfigError", err)
			}
			if got := errors.Is(err, ErrMaybeTorn); got != tt.torn {
				t.Errorf("errors.Is(%v, ErrBLConfigMaybeTorn) = %v, want %v", err, got, tt.torn)
			}
			if tt.torn && c == nil {
				t.Error("a file that may be cut short came without the config it holds")
			}
			if !tt.torn && c != nil {
				t.Errorf("config = %+v, want nil", c)
			}
			if tt.line != 0 && ce.Line != tt.line {
				t.Errorf("line = %d, want %d (%v)", ce.Line, tt.line, err)
			}
			if strings.Contains(err.Error(), blSecret) || strings.Contains(err.Error(), blSecret[:4]) {
				t.Errorf("error %q quotes the file's content", err)
			}
		})
	}
}

// TestParseBLConfigTornPrefixes cuts the writers' files at every byte. Every cut of a current-format file
// is rejected. A yaml.v2 file cut right after the last workspace's device_code, client_credentials or env
// line looks exactly like a complete file of an older yaml.v2 writer: that is the one cut the parser cannot
// see, and this test pins it down.
func TestParseBLConfigTornPrefixes(t *testing.T) {
	for _, file := range []string{"current.yaml", "current-no-credentials.yaml", "legacy-v2.yaml", "legacy-v2-no-tracking.yaml"} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "blconfig", file))
			if err != nil {
				t.Fatal(err)
			}
			for n := 1; n < len(data); n++ {
				prefix := data[:n]
				_, err := Parse(prefix)
				if err != nil {
					continue
				}
				lines := strings.Split(strings.TrimSuffix(string(prefix), "\n"), "\n")
				last := strings.TrimSpace(lines[len(lines)-1])
				undetectable := strings.HasPrefix(file, "legacy") && (strings.HasPrefix(last, "device_code:") ||
					strings.HasPrefix(last, "client_credentials:") || strings.HasPrefix(last, "env:"))
				if !undetectable {
					t.Errorf("prefix of %d bytes accepted:\n%s", n, prefix)
				}
			}
		})
	}
}

func TestMarshalBLConfig(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"zero value", Config{}, "context:\n  workspace: \nworkspaces:\ntracking: false\n"},
		{"workspace without credentials", Config{Workspaces: []Workspace{{Name: "a"}}},
			"context:\n  workspace: \nworkspaces:\n- name: a\n  credentials:\ntracking: false\n"},
		{"field order and quoting", Config{Context: Context{Workspace: "a"}, Tracking: true, Workspaces: []Workspace{{
			Name: "a", ID: "id-1", Env: "dev",
			Credentials: Credentials{APIKey: "k", AccessToken: "at", RefreshToken: "rt", ExpiresIn: 60, DeviceCode: "dc", ClientCredentials: "cc"},
		}}}, "context:\n  workspace: a\nworkspaces:\n- name: a\n  id: id-1\n  credentials:\n    apiKey: \"k\"\n" +
			"    access_token: at\n    refresh_token: rt\n    expires_in: 60\n    device_code: dc\n    client_credentials: \"cc\"\n" +
			"  env: \"dev\"\ntracking: true\n"},
		{"non-positive expires_in left out", Config{Workspaces: []Workspace{{Name: "a", Credentials: Credentials{ExpiresIn: -1}}}},
			"context:\n  workspace: \nworkspaces:\n- name: a\n  credentials:\ntracking: false\n"},
		{"values yaml would misread are escaped", Config{Workspaces: []Workspace{{Name: "a: b", Credentials: Credentials{
			APIKey: `k"\`, AccessToken: "123", RefreshToken: "x #y", DeviceCode: "a\nb: c",
		}}}}, "context:\n  workspace: \nworkspaces:\n- name: \"a: b\"\n  credentials:\n    apiKey: \"k\\\"\\\\\"\n" +
			"    access_token: \"123\"\n    refresh_token: \"x #y\"\n    device_code: \"a\\nb: c\"\ntracking: false\n"},
		{"invalid UTF-8 becomes U+FFFD", Config{Workspaces: []Workspace{{Name: "a", Credentials: Credentials{AccessToken: "x\xffy"}}}},
			"context:\n  workspace: \nworkspaces:\n- name: a\n  credentials:\n    access_token: \"x\uFFFDy\"\ntracking: false\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(tt.c.Marshal()); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestBLConfigWorkspace(t *testing.T) {
	c := &Config{Workspaces: []Workspace{{Name: "a", ID: "1"}, {Name: "b"}, {Name: "a", ID: "2"}}}
	ws, ok := c.Workspace("a")
	if !ok || ws.ID != "1" {
		t.Fatalf("Workspace(a) = %+v, %v; want the first entry", ws, ok)
	}
	ws.Env = "dev"
	if c.Workspaces[0].Env != "dev" {
		t.Error("Workspace does not point into the config")
	}
	if ws, ok := c.Workspace("missing"); ok || ws != nil {
		t.Errorf("Workspace(missing) = %+v, %v", ws, ok)
	}
}

func TestReadBLConfig(t *testing.T) {
	dir := t.TempDir()
	t.Run("missing file", func(t *testing.T) {
		c, err := Read(filepath.Join(dir, "nope", "config.yaml"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("error = %v, want fs.ErrNotExist", err)
		}
		if !reflect.DeepEqual(c, &Config{}) {
			t.Errorf("config = %+v, want empty", c)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(dir, "empty.yaml"), "", 0o600)
		c, err := Read(path)
		if !errors.Is(err, ErrEmpty) || !reflect.DeepEqual(c, &Config{}) {
			t.Fatalf("got %+v, %v; want an empty config and ErrBLConfigEmpty", c, err)
		}
	})
	t.Run("torn file", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(dir, "torn.yaml"), "context:\n  workspace: a\nworkspaces:\n", 0o600)
		c, err := Read(path)
		var ce *Error
		if !errors.As(err, &ce) || !errors.Is(err, ErrMaybeTorn) || c == nil || c.Context.Workspace != "a" {
			t.Fatalf("got %+v, %v; want the config and a *BLConfigError matching ErrBLConfigMaybeTorn", c, err)
		}
	})
	t.Run("invalid file", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(dir, "invalid.yaml"), "context: [\n", 0o600)
		c, err := Read(path)
		var ce *Error
		if !errors.As(err, &ce) || errors.Is(err, ErrMaybeTorn) || c != nil {
			t.Fatalf("got %+v, %v; want nil and a *BLConfigError", c, err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(dir, "big.yaml"), strings.Repeat("#\n", sources.MaxBLConfigBytes), 0o600)
		if c, err := Read(path); err == nil || c != nil {
			t.Fatalf("got %+v, %v; want an error", c, err)
		}
	})
	t.Run("good file", func(t *testing.T) {
		c, err := Read(filepath.Join("testdata", "blconfig", "current.yaml"))
		if err != nil || len(c.Workspaces) != 3 {
			t.Fatalf("got %+v, %v", c, err)
		}
	})
}

func writeBLTestFile(t *testing.T, path, content string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile's mode is masked by the umask
		t.Fatal(err)
	}
	return path
}

func readBLTestdata(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "blconfig", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// checkOnlyConfigInDir fails if the directory holds anything but the config file, such as a leftover
// temporary file.
func checkOnlyConfigInDir(t *testing.T, path string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != filepath.Base(path) {
			t.Errorf("unexpected file %s left in the config directory", e.Name())
		}
	}
}

func TestUpdateBLCredentials(t *testing.T) {
	t.Run("updates one workspace, the rest untouched", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), readBLTestdata(t, "current.yaml"), 0o644)
		err := Update(path, "acme-prod", func(c *Credentials) {
			c.AccessToken = "eyJnew"
			c.RefreshToken = "FAKE-rotated"
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Replace(readBLTestdata(t, "current.yaml"), "eyJhbGciOi…", "eyJnew", 1)
		want = strings.Replace(want, "FAKE-refresh", "FAKE-rotated", 1)
		if string(got) != want {
			t.Errorf("file:\n%s\nwant:\n%s", got, want)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v, want 0600", st.Mode().Perm())
		}
		checkOnlyConfigInDir(t, path)
	})

	t.Run("adds a missing workspace at the end", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), readBLTestdata(t, "current.yaml"), 0o600)
		if err := Update(path, "acme-new", func(c *Credentials) { c.APIKey = "bl_NEW" }); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		want := strings.Replace(readBLTestdata(t, "current.yaml"), "tracking: false\n",
			"- name: acme-new\n  credentials:\n    apiKey: \"bl_NEW\"\ntracking: false\n", 1)
		if string(got) != want {
			t.Errorf("file:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("keeps a yaml.v2 file as it is", func(t *testing.T) {
		// It used to be converted to the current format on the first write: now only what
		// changed is written, so a file nothing changed in is left alone.
		path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), readBLTestdata(t, "legacy-v2.yaml"), 0o600)
		before, _ := os.Stat(path)
		if err := Update(path, "acme-sa", func(*Credentials) {}); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		after, _ := os.Stat(path)
		if string(got) != readBLTestdata(t, "legacy-v2.yaml") || !os.SameFile(before, after) {
			t.Errorf("file:\n%s", got)
		}
	})

	t.Run("no write when nothing changes", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), readBLTestdata(t, "current.yaml"), 0o600)
		before, _ := os.Stat(path)
		if err := Update(path, "acme-ci", func(c *Credentials) { c.APIKey = "bl_FAKEKEY" }); err != nil {
			t.Fatal(err)
		}
		after, _ := os.Stat(path)
		if !os.SameFile(before, after) {
			t.Error("the file was replaced although its content did not change")
		}
	})

	t.Run("creates a missing file and its directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "home", ".blaxel")
		path := filepath.Join(dir, "config.yaml")
		if err := Update(path, "acme", func(c *Credentials) { c.APIKey = "bl_FAKE" }); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		want := "context:\n  workspace: \nworkspaces:\n- name: acme\n  credentials:\n    apiKey: \"bl_FAKE\"\ntracking: false\n"
		if string(got) != want {
			t.Errorf("file:\n%s\nwant:\n%s", got, want)
		}
		for p, mode := range map[string]os.FileMode{dir: 0o700, filepath.Dir(dir): 0o700, path: 0o600} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != mode {
				t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), mode)
			}
		}
	})

	t.Run("empty file filled by bl meanwhile", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), "", 0o600)
		setRecheckHook(t, func() { writeBLTestFile(t, path, readBLTestdata(t, "current.yaml"), 0o600) })
		if err := Update(path, "acme-ci", func(c *Credentials) { c.APIKey = "bl_NEW" }); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if want := strings.Replace(readBLTestdata(t, "current.yaml"), "bl_FAKEKEY", "bl_NEW", 1); string(got) != want {
			t.Errorf("file:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("file that stays empty", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), "\n", 0o600)
		waited := 0
		setRecheckHook(t, func() { waited++ })
		if err := Update(path, "acme", func(c *Credentials) { c.APIKey = "bl_FAKE" }); err != nil {
			t.Fatal(err)
		}
		if waited != 1 {
			t.Errorf("waited %d times, want 1", waited)
		}
		c, err := Read(path)
		if err != nil || len(c.Workspaces) != 1 || c.Workspaces[0].Credentials.APIKey != "bl_FAKE" {
			t.Errorf("got %+v, %v", c, err)
		}
	})

	t.Run("follows a symbolic link", func(t *testing.T) {
		dir := t.TempDir()
		real := writeBLTestFile(t, filepath.Join(dir, "real.yaml"), readBLTestdata(t, "current.yaml"), 0o600)
		link := filepath.Join(dir, "config.yaml")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		if err := Update(link, "acme-ci", func(c *Credentials) { c.APIKey = "bl_NEW" }); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the link was replaced: %v", err)
		}
		if got, _ := os.ReadFile(real); !strings.Contains(string(got), "bl_NEW") {
			t.Errorf("the link's target was not updated:\n%s", got)
		}
	})

	t.Run("concurrent updates all land", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), readBLTestdata(t, "current.yaml"), 0o600)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				if err := Update(path, fmt.Sprintf("ws-%d", i), func(c *Credentials) { c.APIKey = "k" }); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		c, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Workspaces) != 3+8 {
			t.Errorf("%d workspaces, want 11", len(c.Workspaces))
		}
	})

	t.Run("refuses an empty workspace name", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := Update(path, "", func(*Credentials) {}); err == nil {
			t.Fatal("no error")
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a file was written: %v", err)
		}
	})

	t.Run("refuses a credential that is not UTF-8", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), readBLTestdata(t, "current.yaml"), 0o600)
		err := Update(path, "acme-ci", func(c *Credentials) { c.APIKey = "bl_\xff" })
		if err == nil || strings.Contains(err.Error(), "bl_") {
			t.Fatalf("error = %v, want one that does not quote the value", err)
		}
		if got, _ := os.ReadFile(path); string(got) != readBLTestdata(t, "current.yaml") {
			t.Error("the file was changed")
		}
	})
}

func setRecheckHook(t *testing.T, f func()) {
	old := waitBeforeRecheck
	waitBeforeRecheck = f
	t.Cleanup(func() { waitBeforeRecheck = old })
}

func FuzzParseBLConfig(f *testing.F) {
	inputs, _ := filepath.Glob(filepath.Join("testdata", "blconfig", "*.yaml"))
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	for _, s := range []string{"", "\n", "~\n", "- a\n", "workspaces: []\n", "workspaces:\ntracking: true\n",
		"a: &x [*x]\n", "workspaces:\n- name: a\n  credentials:\n    expires_in: 0x10\ntracking: yes\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			var ce *Error
			if !errors.Is(err, ErrEmpty) && !errors.As(err, &ce) {
				t.Fatalf("error %v is neither ErrBLConfigEmpty nor a *BLConfigError", err)
			}
			return
		}
		out := c.Marshal()
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("ParseBLConfig(Marshal()) = %v\n%s", err, out)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip:\n got %+v\nwant %+v\n%s", again, c, out)
		}
		if out2 := again.Marshal(); !bytes.Equal(out2, out) {
			t.Fatalf("Marshal is not stable:\n%s\n%s", out, out2)
		}
	})
}

// FuzzMarshalBLConfig feeds arbitrary strings to every field Marshal writes: whatever they hold, Marshal
// must produce a file that parses back to the same config.
func FuzzMarshalBLConfig(f *testing.F) {
	f.Add("acme", "id", "bl_KEY", "eyJ.x.y", "rt", "dc", "Y2M=", "dev", 7200)
	f.Add("a: b", "123", `k"\`, "true", " x", "#c", "a\nb", "\u2028", -1)
	f.Add("- x", "~", "'q'", "null", "[a]", "{b}", "*a", "&a", 0)
	f.Fuzz(func(t *testing.T, name, id, apiKey, access, refresh, device, client, env string, expires int) {
		c := &Config{
			Context: Context{Workspace: name},
			Workspaces: []Workspace{{Name: name, ID: id, Env: env, Credentials: Credentials{
				APIKey: apiKey, AccessToken: access, RefreshToken: refresh, ExpiresIn: expires, DeviceCode: device, ClientCredentials: client,
			}}},
		}
		want := &Config{Context: Context{Workspace: asMarshalled(name)}, Workspaces: []Workspace{{
			Name: asMarshalled(name), ID: asMarshalled(id), Env: asMarshalled(env), Credentials: Credentials{
				APIKey: asMarshalled(apiKey), AccessToken: asMarshalled(access), RefreshToken: asMarshalled(refresh), ExpiresIn: max(expires, 0),
				DeviceCode: asMarshalled(device), ClientCredentials: asMarshalled(client),
			}}}}
		out := c.Marshal()
		got, err := Parse(out)
		if name == "" {
			if err == nil {
				t.Fatal("a workspace without a name was accepted")
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseBLConfig(Marshal()) = %v\n%s", err, out)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v\n%s", got, want, out)
		}
	})
}

// asMarshalled replaces each invalid UTF-8 byte with U+FFFD, as Marshal does.
func asMarshalled(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r)
	}
	return b.String()
}

func TestBLUnknownKeys(t *testing.T) {
	data := []byte(`context:
  workspace: a
workspaces:
- name: a
  credentials:
    apiKey: "bl_FAKE-A"
    clientCredentials: "FAKE-A-CC"
- name: b
  credentials:
    api_key: "bl_FAKE-SECRET-B"
    ApiKey: x
    clientcredentials: y
    refreshToken: z
    accessToken: z
    expiresIn: 1
    device-code: z
    client_credential: z
    wibble: z
tracking: false
`)
	got := UnknownKeys(data)
	if len(got["a"]) != 0 {
		t.Errorf("a: %v; apiKey and clientCredentials are read", got["a"])
	}
	want := []struct {
		key  string
		line int
		want string
	}{
		{"api_key", 10, "apiKey"}, {"ApiKey", 11, "apiKey"}, {"clientcredentials", 12, "client_credentials"},
		{"refreshToken", 13, "refresh_token"}, {"accessToken", 14, "access_token"}, {"expiresIn", 15, "expires_in"},
		{"device-code", 16, "device_code"}, {"client_credential", 17, "client_credentials"}, {"wibble", 18, ""},
	}
	if len(got["b"]) != len(want) {
		t.Fatalf("b: %v", got["b"])
	}
	for i, w := range want {
		u := got["b"][i]
		if u.Key != w.key || u.Line != w.line || u.Want != w.want {
			t.Errorf("b[%d] = %+v, want %+v", i, u, w)
		}
		if s := u.String(); strings.Contains(s, "FAKE") || !strings.Contains(s, w.key+":") {
			t.Errorf("%q: names no key, or quotes a value", s)
		}
	}
	if s := got["b"][2].String(); !strings.Contains(s, "client_credentials:") || !strings.Contains(s, "clientCredentials:") {
		t.Errorf("%q: want both spellings Blaxel's tools read", s)
	}
	if s := got["b"][8].String(); !strings.Contains(s, "apiKey, access_token") {
		t.Errorf("%q: want the keys bl reads listed", s)
	}
	for _, bad := range []string{"", "not: [yaml", "- a list\n", "workspaces: 3\n"} {
		if got := UnknownKeys([]byte(bad)); got != nil {
			t.Errorf("BLUnknownKeys(%q) = %v", bad, got)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestConfigEqual: a change of any field is a change; the same content written another way is
// not (the source then tells nobody).
func TestConfigEqual(t *testing.T) {
	base := "context:\n  workspace: a\nworkspaces:\n- name: a\n  credentials:\n    apiKey: k1\n  env: dev\ntracking: false\n"
	same := "context: {workspace: a}\nworkspaces:\n  - name: a\n    env: dev\n    credentials: {apiKey: \"k1\"}\ntracking: false\n"
	a, err := Parse([]byte(base))
	must(t, err)
	b, err := Parse([]byte(same))
	must(t, err)
	if !a.Equal(b) {
		t.Fatalf("the same config written another way is not Equal:\n%+v\n%+v", a, b)
	}
	for _, changed := range []string{
		strings.Replace(base, "workspace: a", "workspace: b", 1),
		strings.Replace(base, "apiKey: k1", "apiKey: k2", 1),
		strings.Replace(base, "env: dev", "env: prod", 1),
		strings.Replace(base, "tracking: false", "tracking: true", 1),
		strings.Replace(base, "tracking: false", "- name: b\n  credentials:\n    apiKey: k3\ntracking: false", 1),
	} {
		c, err := Parse([]byte(changed))
		must(t, err)
		if a.Equal(c) {
			t.Errorf("a changed config is Equal to the old one:\n%s", changed)
		}
	}
}
