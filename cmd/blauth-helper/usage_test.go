package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// notOurFlags are flag-like strings in the helper's code that are arguments to other programs.
var notOurFlags = map[string]string{
	"--socket":     "blauthd's, when the helper starts one",
	"--log-format": "blauthd's, when the helper starts one",
	"-echo":        "stty's",
	"-c":           "sh's, running sink --exec",
}

// helperFlags are the flag-like string literals of the helper's own code ("-w", "--json"...):
// every flag a command reads is written there, so a flag added to a parser is found.
func helperFlags(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	flagLike := regexp.MustCompile(`^--?[a-z][a-z-]*$`)
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && flagLike.MatchString(s) && notOurFlags[s] == "" && !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
			return true
		})
	}
	if len(out) < 8 {
		t.Fatalf("found only %v: the scan is broken", out)
	}
	return out
}

// exitCodes are the values of ipc's Exit* constants, the helper's exit statuses.
func exitCodes(t *testing.T) map[string]int {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "..", "ipc", "exit.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]int{}
	ast.Inspect(file, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Values) != len(vs.Names) {
			return true
		}
		for i, name := range vs.Names {
			if lit, ok := vs.Values[i].(*ast.BasicLit); ok && strings.HasPrefix(name.Name, "Exit") && lit.Kind == token.INT {
				codes[name.Name], _ = strconv.Atoi(lit.Value)
			}
		}
		return true
	})
	if len(codes) < 7 {
		t.Fatalf("found only %v: the scan is broken", codes)
	}
	return codes
}

// --help reads like a mature tool's: what the helper is, its usage, every flag its code reads
// written as typed, the environment, the files, every exit status and where the docs are.
func TestHelpListsEveryFlagAndExitStatus(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"token", "--help"}, {"-w", "acme", "login", "-h"}} {
		r := runHelper(t, "", args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%v: %s", args, r)
		}
		help := r.stdout
		for _, f := range helperFlags(t) {
			if !regexp.MustCompile(`(^|[\s,(\[])` + regexp.QuoteMeta(f) + `($|[\s,)\]])`).MatchString(help) {
				t.Errorf("%v does not list %s", args, f)
			}
		}
		i := strings.Index(help, "\nExit status:\n")
		if i < 0 {
			t.Fatalf("%v has no exit statuses:\n%s", args, help)
		}
		status := help[i:]
		for name, code := range exitCodes(t) {
			if !regexp.MustCompile(`\n  ` + strconv.Itoa(code) + `\b`).MatchString(status) {
				t.Errorf("%v: the exit statuses do not list %d (%s)", args, code, name)
			}
		}
		for _, want := range []string{"blauthd", "Usage:\n  blauth-helper ", "\nCommands:\n", "\nEnvironment:\n", "BLAUTH_SOCKET", "BLAUTH_NO_SPAWN",
			"\nFiles:\n", "blauthd.log", "Docs: docs/HELPER.md", "(default: the first BL_WORKSPACE"} {
			if !strings.Contains(help, want) {
				t.Errorf("%v does not say %q", args, want)
			}
		}
		for _, line := range strings.Split(help, "\n") {
			if len(line) > 100 {
				t.Errorf("%v: line over 100 columns: %q", args, line)
			}
		}
	}
}

// A bad flag is one error line and the way to --help, exit 2: not the usage.
func TestBadFlagIsOneLineAndTheWayToHelp(t *testing.T) {
	for _, args := range [][]string{{"--foo"}, {"--workspac", "acme", "token"}, {"token", "--jsn"}, {"status", "--jsn"}, {"exec", "--prxy", "--", "true"}} {
		r := runHelper(t, "", args...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.code != exitUsage || r.stdout != "" || len(lines) != 2 || !strings.HasPrefix(lines[0], "blauth: error: unknown flag ") ||
			lines[1] != "blauth: hint: run 'blauth-helper --help' for usage" {
			t.Errorf("%v: %s; want exit 2, one error line and the way to --help", args, r)
		}
	}
}
