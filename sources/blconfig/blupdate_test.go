package blconfig

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/sources"
)

// The write-backs the daemon does: a refreshed login session, a device login (which replaces
// whatever the workspace held), a key saved for a workspace.
func refreshSession(c *Credentials) {
	c.AccessToken, c.RefreshToken, c.ExpiresIn = "eyJhbGciOi.new", "FAKE-rotated", 7200
}

func deviceLogin(c *Credentials) {
	*c = Credentials{AccessToken: "eyJhbGciOi.login", RefreshToken: "FAKE-login", ExpiresIn: 7200, DeviceCode: "FAKE-device-2"}
}

func setAPIKey(c *Credentials) { c.APIKey = "bl_NEW" }

func rotateClientCredentials(c *Credentials) { c.ClientCredentials = "bmV3LWlkOm5ldy1zZWNyZXQ=" }

// updateGoldenCases are edits of real and hand-written files. Each golden file under
// testdata/blconfig/update/ holds the file after the edit; go test -run TestUpdateBLConfigGolden
// -update rewrites them (then read the diff: only the named workspace's changed fields may move).
var updateGoldenCases = []struct {
	name, input, workspace string
	fn                     func(*Credentials)
}{
	{"current-refresh", "current.yaml", "acme-prod", refreshSession},
	{"current-new-workspace", "current.yaml", "acme-new", setAPIKey},
	{"current-login-over-api-key", "current.yaml", "acme-ci", deviceLogin},
	{"legacy-v2-refresh", "legacy-v2.yaml", "acme-prod", refreshSession},
	{"legacy-v2-login-over-service-account", "legacy-v2.yaml", "acme-sa", deviceLogin},
	{"legacy-v2-no-tracking-new-workspace", "legacy-v2-no-tracking.yaml", "acme-new", setAPIKey},
	{"legacy-v2-no-workspaces-new-workspace", "legacy-v2-no-workspaces.yaml", "acme-new", setAPIKey},
	{"current-empty-new-workspace", "current-empty.yaml", "acme-new", setAPIKey},
	{"sdk-camelcase-rotate", "sdk-camelcase.yaml", "acme-both", rotateClientCredentials},
	{"hand-written-refresh", "update/hand-written.yaml", "acme-prod", refreshSession},
	{"hand-written-login-over-service-account", "update/hand-written.yaml", "acme-sa", deviceLogin},
	{"hand-written-rotate-camelcase", "update/hand-written.yaml", "acme-sa", rotateClientCredentials},
	{"hand-written-bare-credentials", "update/hand-written.yaml", "acme-ci", setAPIKey},
	{"hand-written-new-workspace", "update/hand-written.yaml", "acme-new", setAPIKey},
	{"crlf-refresh", "update/crlf.yaml", "acme-prod", refreshSession},
	{"crlf-new-workspace", "update/crlf.yaml", "acme-new", setAPIKey},
	{"heredoc-new-workspace", "update/heredoc.yaml", "acme-new", setAPIKey},
	{"heredoc-login", "update/heredoc.yaml", "ci", deviceLogin},
}

// TestUpdateBLConfigGolden: an update changes the lines of the fields it changed, inserts the
// fields and workspaces it adds, and leaves every other byte of the file as it was.
func TestUpdateBLConfigGolden(t *testing.T) {
	for _, tt := range updateGoldenCases {
		t.Run(tt.name, func(t *testing.T) {
			input := readBLTestdata(t, tt.input)
			path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), input, 0o600)
			setRecheckHook(t, func() {})
			if err := Update(path, tt.workspace, tt.fn); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "blconfig", "update", tt.name+".golden")
			if *updateGolden {
				must(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestUpdateBLConfigGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("file differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
			checkUpdateReadsBack(t, []byte(input), got, tt.workspace, tt.fn)
		})
	}
}

// checkUpdateReadsBack parses the file before and after and checks that after = before with fn
// applied to workspace (appended when it was missing), nothing else changed.
func checkUpdateReadsBack(t *testing.T, before, after []byte, workspace string, fn func(*Credentials)) {
	t.Helper()
	want, err := Parse(before)
	if err != nil && !errors.Is(err, ErrMaybeTorn) {
		t.Fatalf("the input does not parse: %v", err)
	}
	ws, ok := want.Workspace(workspace)
	if !ok {
		want.Workspaces = append(want.Workspaces, Workspace{Name: workspace})
		ws = &want.Workspaces[len(want.Workspaces)-1]
	}
	fn(&ws.Credentials)
	got, err := Parse(after)
	if err != nil && !errors.Is(err, ErrMaybeTorn) {
		t.Fatalf("the result does not parse: %v\n%s", err, after)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the result reads as\n%+v\nwant\n%+v", got, want)
	}
}

// TestUpdateBLConfigKeepsTheCamelCaseKey is the bug report: refreshing a login session rewrote a
// neighbouring service account's clientCredentials: as client_credentials:, which the
// TypeScript and Python SDKs do not read.
func TestUpdateBLConfigKeepsTheCamelCaseKey(t *testing.T) {
	input := readBLTestdata(t, "update/hand-written.yaml")
	path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), input, 0o600)
	if err := Update(path, "acme-prod", refreshSession); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	const sa = "  # The service account the TypeScript SDK uses: it reads only clientCredentials.\n  - name: acme-sa\n" +
		"    credentials:\n      clientCredentials: \"Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ=\"\n    env: 'dev'\n"
	if !strings.Contains(string(got), sa) {
		t.Fatalf("the service account's entry changed:\n%s", got)
	}
}

// TestUpdateBLConfigRefusesWhatItCannotEditSafely: rather than reformat a file, the update fails
// and writes nothing.
func TestUpdateBLConfigRefusesWhatItCannotEditSafely(t *testing.T) {
	tests := []struct {
		name, in, workspace string
		fn                  func(*Credentials)
		want                string
	}{
		{"flow-style file", "{context: {workspace: a}, workspaces: [{name: a, credentials: {apiKey: k}}], tracking: true}\n",
			"a", refreshSession, "flow style"},
		{"flow-style credentials", "workspaces:\n- name: a\n  credentials: {access_token: x, refresh_token: y}\ntracking: false\n",
			"a", refreshSession, "flow style"},
		{"flow-style workspaces, new workspace", "workspaces: [{name: a, credentials: {apiKey: k}}]\ntracking: false\n",
			"b", setAPIKey, "flow style"},
		{"block scalar value", "workspaces:\n- name: a\n  credentials:\n    access_token: |\n      abc\n    refresh_token: r\ntracking: false\n",
			"a", refreshSession, "spans several lines"},
		{"multi-line quoted value", "workspaces:\n- name: a\n  credentials:\n    access_token: \"ab\n      cd\"\n    refresh_token: r\ntracking: false\n",
			"a", refreshSession, "spans several lines"},
		{"anchored value", "workspaces:\n- name: a\n  credentials:\n    access_token: &t abc\n    refresh_token: r\n- name: b\n  credentials:\n    access_token: *t\ntracking: false\n",
			"a", refreshSession, "anchor"},
		{"tagged value", "workspaces:\n- name: a\n  credentials:\n    access_token: !!str abc\ntracking: false\n",
			"a", refreshSession, "tag"},
		{"workspace entry that is an alias", "x: &w {name: a, credentials: {apiKey: k}}\nworkspaces:\n- *w\ntracking: false\n",
			"a", setAPIKey, "alias"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), tt.in, 0o600)
			before, _ := os.Stat(path)
			err := Update(path, tt.workspace, tt.fn)
			if !errors.Is(err, ErrUneditable) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "nothing written") {
				t.Fatalf("error = %v; want ErrBLConfigUneditable saying %q and that nothing was written", err, tt.want)
			}
			for _, secret := range []string{"abc", "eyJhbGciOi.new", "FAKE-rotated"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error quotes a value: %v", err)
				}
			}
			got, _ := os.ReadFile(path)
			after, _ := os.Stat(path)
			if string(got) != tt.in || !os.SameFile(before, after) {
				t.Errorf("the file was changed:\n%s", got)
			}
			checkOnlyConfigInDir(t, path)
		})
	}
}

// TestUpdateBLConfigUnchangedFieldsAreNotTouched: fields fn leaves alone are not rewritten, even
// where the edit could not handle them (a block scalar elsewhere in the same workspace).
func TestUpdateBLConfigUnchangedFieldsAreNotTouched(t *testing.T) {
	in := "workspaces:\n- name: a\n  credentials:\n    apiKey: |\n      multi\n    access_token: old\n    refresh_token: r\ntracking: false\n"
	path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), in, 0o600)
	if err := Update(path, "a", func(c *Credentials) { c.AccessToken = "new" }); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != strings.Replace(in, "access_token: old", "access_token: new", 1) {
		t.Fatalf("file:\n%s", got)
	}
}

// TestUpdateBLConfigHandWrittenWithoutTracking: a complete file without the tracking line (CI
// writes one with a heredoc) is updated once it reads the same twice.
func TestUpdateBLConfigHandWrittenWithoutTracking(t *testing.T) {
	in := readBLTestdata(t, "update/heredoc.yaml")
	path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), in, 0o600)
	waits := 0
	setRecheckHook(t, func() { waits++ })
	if err := Update(path, "ci", func(c *Credentials) { c.APIKey = "bl_ci2" }); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != strings.Replace(in, "bl_ci", "bl_ci2", 1) {
		t.Fatalf("file:\n%s", got)
	}
	if waits != 1 {
		t.Errorf("read again after %d waits, want 1", waits)
	}
}

// TestUpdateBLConfigTornFiles: a file caught while bl writes it is read again; the update
// applies to what bl finished writing. A file that keeps changing, or that stays invalid, is
// refused and left alone.
func TestUpdateBLConfigTornFiles(t *testing.T) {
	full := readBLTestdata(t, "current.yaml")
	for _, torn := range []struct{ name, content string }{
		{"cut mid-line", full[:150]},
		{"cut after workspaces:", "context:\n  workspace: acme-prod\nworkspaces:\n"},
		{"cut mid-list", strings.Split(full, "- name: acme-sa")[0]},
		{"cut inside a quoted value", full[:strings.Index(full, "bl_FAKEKEY")+3]},
		{"empty", ""},
	} {
		t.Run("completed meanwhile: "+torn.name, func(t *testing.T) {
			path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), torn.content, 0o600)
			setRecheckHook(t, func() { writeBLTestFile(t, path, full, 0o600) })
			if err := Update(path, "acme-ci", func(c *Credentials) { c.APIKey = "bl_NEW" }); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); string(got) != strings.Replace(full, "bl_FAKEKEY", "bl_NEW", 1) {
				t.Errorf("file:\n%s", got)
			}
		})
		if torn.content == "" {
			continue
		}
		t.Run("still changing: "+torn.name, func(t *testing.T) {
			path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), torn.content, 0o600)
			n := 0
			setRecheckHook(t, func() {
				n++
				writeBLTestFile(t, path, torn.content+strings.Repeat("#", n)+"\n", 0o600)
			})
			called := false
			err := Update(path, "acme-ci", func(*Credentials) { called = true })
			var ce *Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), "nothing written") {
				t.Fatalf("error = %v, want a *BLConfigError and nothing written", err)
			}
			if called {
				t.Error("fn was called on a torn file")
			}
			if got, _ := os.ReadFile(path); string(got) != torn.content+strings.Repeat("#", n)+"\n" {
				t.Errorf("the torn file was changed:\n%s", got)
			}
			checkOnlyConfigInDir(t, path)
		})
	}
	t.Run("invalid and staying so", func(t *testing.T) {
		path := writeBLTestFile(t, filepath.Join(t.TempDir(), "config.yaml"), "context: [\n", 0o600)
		setRecheckHook(t, func() {})
		err := Update(path, "acme", setAPIKey)
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("error = %v, want a *BLConfigError", err)
		}
		if got, _ := os.ReadFile(path); string(got) != "context: [\n" {
			t.Errorf("file changed:\n%s", got)
		}
	})
}

// TestUpdateBLConfigRefusesAnUnsafeFile: a config another user could write is not written to.
func TestUpdateBLConfigRefusesAnUnsafeFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".blaxel")
	must(t, os.Mkdir(dir, 0o777))
	must(t, os.Chmod(dir, 0o777))
	path := writeBLTestFile(t, filepath.Join(dir, "config.yaml"), readBLTestdata(t, "current.yaml"), 0o600)
	err := Update(path, "acme-ci", setAPIKey)
	if !errors.Is(err, ErrUnsafeFile) || !strings.Contains(err.Error(), "chmod 700 "+dir) {
		t.Fatalf("error = %v; want ErrUnsafeFile with the fix", err)
	}
	if got, _ := os.ReadFile(path); string(got) != readBLTestdata(t, "current.yaml") {
		t.Error("the file was changed")
	}
}

// TestUpdateBLConfigRefusesAFIFO: a FIFO in place of the config is refused without blocking.
func TestUpdateBLConfigRefusesAFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	testkit.MkFIFO(t, path)
	done := make(chan error, 1)
	go func() { done <- Update(path, "acme", setAPIKey) }()
	select {
	case err := <-done:
		if !errors.Is(err, sources.ErrFileRefused) || !strings.Contains(err.Error(), path+" is a FIFO") {
			t.Fatalf("error = %v", err)
		}
	case <-time.After(hostileBound):
		testkit.ReleaseFIFOs()
		t.Fatal("UpdateBLCredentials blocked on a FIFO")
	}
}

// FuzzUpdateBLConfig edits arbitrary config files: an edit either is refused as
// ErrBLConfigUneditable or gives a file in which the workspace holds the new credentials and
// everything else (the other workspaces, context, tracking, unknown keys) decodes as before.
func FuzzUpdateBLConfig(f *testing.F) {
	var inputs []string
	for _, pattern := range []string{"*.yaml", "update/*.yaml"} {
		m, _ := filepath.Glob(filepath.Join("testdata", "blconfig", pattern))
		inputs = append(inputs, m...)
	}
	for i, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(i), "bl_K", "eyJ.a.b", "rt", "dc", "Y2M=", 7200, uint8(i*37))
	}
	f.Add([]byte("workspaces:\n- name: a\n  credentials: ~\ntracking: false\n"), uint8(0), "", "x", "y", "", "", 60, uint8(0xff))
	f.Add([]byte("workspaces:\n- name: a\n  credentials: {}\n  env: dev\ntracking: false\n"), uint8(0), "k", "", "", "", "", 0, uint8(1))
	f.Add([]byte("# c\nworkspaces:\n  - name: a\n    id: x\n    env: e\n"), uint8(0), "k", "a: b", "#x", "", "", -1, uint8(0xff))
	f.Add([]byte("workspaces:\n- name: a\n  credentials:\n    access_token: x # c\n    refresh_token: 'y'\ntracking: true"), uint8(1), "", "1", "true", "", "", 5, uint8(0xff))
	f.Fuzz(func(t *testing.T, data []byte, pick uint8, apiKey, access, refresh, device, client string, expires int, mask uint8) {
		old, err := Parse(data)
		torn := errors.Is(err, ErrMaybeTorn)
		if err != nil && !torn || len(bytes.Trim(data, " \t\r\n")) == 0 {
			return
		}
		names := []string{"fuzz-new"}
		for _, w := range old.Workspaces {
			names = append(names, w.Name)
		}
		workspace := names[int(pick)%len(names)]
		var cur Credentials
		if w, ok := old.Workspace(workspace); ok {
			cur = w.Credentials
		}
		next := cur
		for i, set := range []func(){
			func() { next.APIKey = apiKey }, func() { next.AccessToken = access }, func() { next.RefreshToken = refresh },
			func() { next.ExpiresIn = max(expires, 0) }, func() { next.DeviceCode = device }, func() { next.ClientCredentials = client },
		} {
			if mask&(1<<i) != 0 {
				set()
			}
		}
		for _, s := range []string{next.APIKey, next.AccessToken, next.RefreshToken, next.DeviceCode, next.ClientCredentials} {
			if !utf8.ValidString(s) {
				return // refused before any edit
			}
		}
		out, err := editBLConfig(data, old, torn, workspace, next)
		if err != nil {
			if !errors.Is(err, ErrUneditable) {
				t.Fatalf("edit failed with %v, want ErrBLConfigUneditable", err)
			}
			return
		}
		targetIdx := slices.IndexFunc(old.Workspaces, func(w Workspace) bool { return w.Name == workspace })
		if targetIdx < 0 && next == (Credentials{}) {
			return // UpdateBLCredentials writes nothing for this
		}
		if next == cur && !bytes.Equal(out, data) {
			t.Fatalf("nothing changed, yet the file did:\n%s\n---\n%s", data, out)
		}
		got, err := Parse(out)
		if err != nil && !errors.Is(err, ErrMaybeTorn) {
			t.Fatalf("the result does not parse: %v\n%s", err, out)
		}
		if got.Context != old.Context || got.Tracking != old.Tracking {
			t.Fatalf("context or tracking changed:\n%s", out)
		}
		target, ok := got.Workspace(workspace)
		if !ok || target.Credentials != next {
			t.Fatalf("the workspace holds %+v, want %+v\n%s", target, next, out)
		}
		// Every other workspace, and every other top-level key, decodes as before.
		var before, after map[string]any
		if yaml.Unmarshal(data, &before) != nil || yaml.Unmarshal(out, &after) != nil {
			t.Fatalf("generic decode failed:\n%s", out)
		}
		for k, v := range before {
			if k != "workspaces" && !reflect.DeepEqual(after[k], v) {
				t.Fatalf("top-level key %q changed:\n%s", k, out)
			}
		}
		wb, _ := before["workspaces"].([]any)
		wa, _ := after["workspaces"].([]any)
		if targetIdx < 0 && len(wa) != len(wb)+1 || targetIdx >= 0 && len(wa) != len(wb) {
			t.Fatalf("%d workspaces before, %d after:\n%s", len(wb), len(wa), out)
		}
		for i := range wb {
			if i != targetIdx && !reflect.DeepEqual(wa[i], wb[i]) {
				t.Fatalf("workspace %d changed:\n%s", i, out)
			}
		}
	})
}

// hostileBound is how long a test waits for what a hostile file must not block.
const hostileBound = 30 * time.Second
