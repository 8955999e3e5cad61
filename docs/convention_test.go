package docs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The convention itself: which blocks run, which block is their output, how output matches.
func TestExampleConvention(t *testing.T) {
	md := "# t\n\n```sh\nnot run\n```\n\n```sh test\necho a\n```\n\n```text output\na\n```\n\n" +
		"- in a list:\n\n  ```sh test\n  echo b\n  ```\n\n```sh test\necho c\n```\n\n```text\nnot its output\n```\n"
	path := filepath.Join(t.TempDir(), "t.md")
	if err := os.WriteFile(path, []byte(md), 0o600); err != nil {
		t.Fatal(err)
	}
	blocks, err := extract(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 3 || blocks[0].script != "echo a\n" || strings.Join(blocks[0].want, "|") != "a" ||
		blocks[1].script != "echo b\n" || blocks[1].want != nil || blocks[2].want != nil || blocks[0].line != 7 {
		t.Fatalf("extract: %+v", blocks)
	}
	if err := os.WriteFile(path, []byte("```sh test\necho open\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := extract(path); err == nil {
		t.Error("an unclosed block was not reported")
	}

	for _, tt := range []struct {
		want, got string
		ok        bool
	}{
		{"a\nb", "a\nb\n", true},
		{"a\nb", "a\n", false},
		{"a", "a\nb\n", false},
		{"token=eyJ…\nexit 0", "token=eyJhbGc.x.y\nexit 0\n", true},
		{"token=eyJ…", "token=bl_key\n", false},
		{"a\n…\nz", "a\nb\nc\nz\n", true},
		{"a\n…\nz", "a\nz\n", true},
		{"a\n…\nz", "a\nb\n", false},
		{"[]", "", false},
		{"", "", true},
	} {
		if msg := compare(strings.Split(tt.want, "\n"), tt.got); (msg == "") != tt.ok {
			t.Errorf("compare(%q, %q) = %q, want ok %v", tt.want, tt.got, msg, tt.ok)
		}
	}
}
