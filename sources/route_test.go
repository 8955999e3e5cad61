package sources

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRoutesMostSpecificWins(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	c, err := ReadBlauthConfig(writeConfig(t, `routes:
- dir: ~/work/**
  workspace: work
- dir: ~/work/acme/**
  workspace: acme
- dir: ~/work/*/api
  workspace: any-api
- dir: ~/work/acme/legacy
  workspace: legacy
- dir: /srv/proj-?/**
  workspace: srv
`), true)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ dir, want string }{
		{home + "/work", "work"},
		{home + "/work/beta/x", "work"},
		{home + "/work/acme", "acme"},
		{home + "/work/acme/api", "acme"}, // a name beats * at the first difference
		{home + "/work/beta/api", "any-api"},
		{home + "/work/acme/legacy", "legacy"},
		{home + "/work/acme/legacy/sub", "acme"},
		{"/srv/proj-a/deep/er", "srv"},
		{"/srv/proj-ab", ""},
		{home, ""},
		{home + "/workshop", ""},
	}
	for _, tc := range tests {
		r, ok := MatchRoute(c.Routes, tc.dir)
		if got := r.Workspace; !ok && tc.want != "" || ok && got != tc.want {
			t.Errorf("MatchRoute(%s) = %q, %v; want %q", tc.dir, got, ok, tc.want)
		}
	}
	if r, _ := MatchRoute(c.Routes, home+"/work/acme"); r.Line != 4 || r.Dir != "~/work/acme/**" {
		t.Errorf("route %+v; want the one on line 4 as written", r)
	}
}

func TestRoutePatternErrorsNameTheLine(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	tests := []struct {
		name, content string
		want          []string
	}{
		{"relative", "routes:\n- dir: ~/ok/**\n  workspace: a\n- dir: work/acme\n  workspace: b\n", []string{"line 4", "relative"}},
		{"bad class", "routes:\n  - dir: ~/work/[acme\n    workspace: a\n", []string{"line 2", "not a valid pattern"}},
		{"partial **", "routes:\n- dir: ~/work/a**\n  workspace: a\n", []string{"line 2", "whole path element"}},
		{"~user", "routes:\n- dir: ~bob/x\n  workspace: a\n", []string{"line 2", "~user"}},
		{"no workspace", "routes:\n- dir: ~/x\n", []string{"line 2", "both dir and workspace"}},
		{"unknown key", "routes:\n- dir: ~/x\n  workpace: a\n", []string{"line 3", `unknown key "workpace"`}},
		{"not a list", "routes: ~/x\n", []string{"line 1", "must be a list"}},
		{"not a string", "routes:\n- dir: [a]\n  workspace: a\n", []string{"line 2", "non-empty string"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			_, err := ReadBlauthConfig(path, true)
			if !errors.Is(err, ErrBlauthConfig) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v; want ErrBlauthConfig naming %s", err, path)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v; want it to say %q", err, w)
				}
			}
		})
	}
}
