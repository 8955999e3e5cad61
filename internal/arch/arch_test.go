package arch

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

const module = "github.com/blauth/blauth"

// rules lists, for each product package, the module's packages and the third-party modules it
// may import (the standard library is always allowed). A package missing here fails the test:
// a new package gets a rule, and ARCHITECTURE.md a line.
var rules = map[string][]string{
	"ipc":                             {},
	"internal/backoff":                {},
	"internal/clock":                  {},
	"internal/recent":                 {},
	"internal/harden":                 {"golang.org/x/sys"},
	"internal/systemd":                {"golang.org/x/sys"},
	"sources":                         {"ipc", "go.yaml.in/yaml/v3"},
	"sources/watch":                   {"github.com/fsnotify/fsnotify", "github.com/rs/zerolog"},
	"sources/blconfig":                {"ipc", "sources", "sources/watch", "github.com/rs/zerolog", "go.yaml.in/yaml/v3"},
	"sources/dotenv":                  {"sources", "sources/watch", "internal/clock", "github.com/rs/zerolog"},
	"sources/blaxeltoml":              {},
	"sources/keyring":                 {"ipc", "sources", "github.com/rs/zerolog", "github.com/zalando/go-keyring"},
	"daemon/internal/notify":          {},
	"daemon/internal/token":           {"ipc", "golang.org/x/oauth2"},
	"daemon/internal/login":           {"daemon/internal/token", "github.com/rs/zerolog"},
	"daemon/internal/resolver":        {"ipc", "sources", "sources/blconfig", "sources/blaxeltoml", "sources/dotenv", "sources/keyring", "sources/watch", "internal/clock", "internal/recent", "daemon/internal/notify", "github.com/rs/zerolog"},
	"daemon/internal/broker":          {"ipc", "sources", "daemon/internal/token", "internal/backoff", "internal/clock", "daemon/internal/notify", "github.com/rs/zerolog"},
	"daemon/internal/server":          {"ipc", "sources", "sources/keyring", "daemon/internal/resolver", "daemon/internal/broker", "daemon/internal/login", "daemon/internal/token", "internal/backoff", "internal/clock", "internal/recent", "github.com/rs/zerolog", "golang.org/x/sys"},
	"daemon":                          {"ipc", "sources", "sources/blconfig", "sources/keyring", "sources/watch", "daemon/internal/resolver", "daemon/internal/broker", "daemon/internal/login", "daemon/internal/server", "daemon/internal/token", "internal/clock", "internal/systemd", "github.com/rs/zerolog", "golang.org/x/oauth2"},
	"cmd/blauthd":                     {"daemon", "ipc", "sources", "sources/blconfig", "sources/keyring", "internal/harden", "internal/systemd", "github.com/adrg/xdg", "github.com/rs/zerolog"},
	"cmd/blauth-helper":               {"ipc"},
	"cmd/blauth-proxy":                {"cmd/blauth-proxy/internal/proxy", "ipc"},
	"cmd/blauth-proxy/internal/proxy": {"ipc", "internal/backoff"},
	"clients/go/blauth":               {"ipc", "golang.org/x/oauth2"},
}

// testOnly are the harnesses, fakes and programs that exist for tests and benchmarks: they may
// import anything, and no product package may import them.
var testOnly = []string{"internal/testkit", "internal/arch", "e2e", "reliability", "examples", "docs", "cmd/blauth-bench", "internal/testkit/blaxeltest", "internal/testkit/hydratest", "internal/testkit/daemontest", "internal/benchreport"}

func isTestOnly(rel string) bool {
	for _, p := range testOnly {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Imports    []string
	Standard   bool
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The Go client is a module of its own (clients/go) that this one requires from the
	// checkout: its packages are named by import path, as ./... stops at its go.mod.
	cmd := exec.CommandContext(ctx, "go", "list", "-json", "./...", module+"/clients/go/...")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var ps []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if len(ps) < 10 {
		t.Fatalf("go list found only %d packages", len(ps))
	}
	return ps
}

// allowed reports whether a package under rule may import imp.
func allowed(rule []string, imp string) bool {
	if !strings.Contains(strings.Split(imp, "/")[0], ".") {
		return true // the standard library
	}
	rel, inModule := strings.CutPrefix(imp, module+"/")
	for _, a := range rule {
		if inModule && rel == a || !inModule && (imp == a || strings.HasPrefix(imp, a+"/")) {
			return true
		}
	}
	return false
}

func TestImportsPointOneWay(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if isTestOnly(rel) {
			continue
		}
		rule, ok := rules[rel]
		if !ok {
			t.Errorf("package %s has no import rule: add one here and a line to docs/ARCHITECTURE.md", rel)
			continue
		}
		for _, imp := range p.Imports {
			if r, in := strings.CutPrefix(imp, module+"/"); in && isTestOnly(r) {
				t.Errorf("product package %s imports the test-only %s", rel, r)
			} else if !allowed(rule, imp) {
				t.Errorf("%s imports %s, which its rule does not allow", rel, imp)
			}
		}
	}
}

// parsers may be longer than 80 lines: a grammar read in one place is clearer than one cut up.
var parsers = map[string]bool{"blconfig.Parse": true, "dotenv.Parse": true, "dotenv.parseDotenvEntry": true, "blconfig.parseBLWorkspace": true,
	"blconfig.valueSpan": true} // valueSpan scans the text of a YAML scalar

func TestFunctionsStayShort(t *testing.T) {
	const limit = 80
	var long []string
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if isTestOnly(rel) {
			continue
		}
		for _, f := range p.GoFiles {
			path := filepath.Join(p.Dir, f)
			fset := token.NewFileSet()
			file, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range file.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil || parsers[filepath.Base(rel)+"."+fd.Name.Name] {
					continue
				}
				n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
				if n > limit {
					long = append(long, rel+"/"+f+": "+fd.Name.Name+" is "+strconv.Itoa(n)+" lines")
				}
			}
		}
		if strings.HasPrefix(rel, "cmd/") && !strings.Contains(rel, "/internal/") {
			if n := lines(t, filepath.Join(p.Dir, "main.go")); n >= limit {
				long = append(long, rel+"/main.go is "+strconv.Itoa(n)+" lines (a main stays under 80)")
			}
		}
	}
	sort.Strings(long)
	for _, l := range long {
		t.Error(l)
	}
}

func lines(t *testing.T, path string) int {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	return fset.Position(f.End()).Line
}
