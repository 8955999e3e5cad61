package blconfig

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

const blTwo = `context:
  workspace: ctx-ws
workspaces:
- name: acme
  credentials:
    apiKey: "bl_config_key"
- name: ctx-ws
  credentials:
    apiKey: "ctx_key"
tracking: false
`

// A file that looks cut short and is different when read again is a write in progress: the
// last good view stays and the file is reported; once complete, it is believed.
func TestBLConfigCutShortWhileChangingIsNotBelieved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(blTwo)
	s := NewSource(SourceConfig{Path: path, Log: zerolog.New(zerolog.NewTestWriter(t))})
	defer s.Close()
	cut := blTwo[:strings.Index(blTwo, "- name: ctx-ws")] // valid YAML, cut after acme
	// bl keeps writing: every second look finds other bytes.
	var mu sync.Mutex
	writing, n := true, 0
	s.waitRecheck = func() {
		mu.Lock()
		defer mu.Unlock()
		if writing {
			n++
			write(strings.Replace(cut, "bl_config_key", "k"+strings.Repeat("x", n), 1))
		}
	}
	write(cut)
	s.Reload()
	if w, ok := s.View().Workspace("ctx-ws"); !ok || w.Credentials.APIKey != "ctx_key" {
		t.Fatal("a workspace the cut file lacks is gone: the last good view was not kept")
	}
	if errs := s.Errors(); len(errs) != 1 || !strings.Contains(errs[0].Error, "cut short") {
		t.Fatalf("errors %+v; want the cut file reported", errs)
	}
	mu.Lock()
	writing = false
	mu.Unlock()
	write(strings.Replace(blTwo, "bl_config_key", "done", 1))
	s.Reload()
	if w, ok := s.View().Workspace("acme"); !ok || w.Credentials.APIKey != "done" || len(s.Errors()) != 0 {
		t.Fatalf("after the write: %+v, %+v", w, s.Errors())
	}
}

// TestViewFindsWorkspacesAsTheConfigDoes: the view's index gives the first entry of a name, as
// Config.Workspace does, and nothing for a name the config lacks.
func TestViewFindsWorkspacesAsTheConfigDoes(t *testing.T) {
	c := &Config{Workspaces: []Workspace{{Name: "a", ID: "1"}, {Name: "b"}, {Name: "a", ID: "2"}}}
	v := newView(c)
	for _, name := range []string{"a", "b", "missing"} {
		got, gotOK := v.Workspace(name)
		want, wantOK := c.Workspace(name)
		if got != want || gotOK != wantOK {
			t.Errorf("Workspace(%s) = %p %v, the config's %p %v", name, got, gotOK, want, wantOK)
		}
	}
}
