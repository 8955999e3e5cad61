package blaxeltoml

import (
	"maps"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
	}{
		{"bl's workspace and the SDK's env", "name = \"agent\"\nworkspace = \"acme\"\n\n[env]\nBL_API_KEY = \"k1\"\n", map[string]string{"name": "agent", "workspace": "acme", "env.BL_API_KEY": "k1"}},
		{"other tables and values are skipped", `workspace = 'lit'
functions = ["a", "b]", { x = "y" }]
port = 8080
public = true
when = 1979-05-27 07:32:00Z
ratio = -1.5e3
[runtime]
workspace = "not-top"
[[triggers]]
env = "no"
[env]
BL_WORKSPACE = "from-env"
COUNT = 3
`, map[string]string{"workspace": "lit", "env.BL_WORKSPACE": "from-env"}},
		{"dotted and inline env", "env.A = \"1\"\nother = { env = { B = \"no\" } }\n", map[string]string{"env.A": "1"}},
		{"inline env table", "env = { BL_API_KEY = \"k\", N = 1 }\n", map[string]string{"env.BL_API_KEY": "k"}},
		{"multi-line strings span lines", "notes = \"\"\"\n[env]\nBL_API_KEY = \"x\"\n\"\"\"\nlit = '''\na ''' \nworkspace = \"w\" # comment\n", map[string]string{"notes": "[env]\nBL_API_KEY = \"x\"\n", "lit": "a ", "workspace": "w"}},
		{"escapes, CRLF and quoted keys", "\"workspace\" = \"a\\u00e9\\tb\"\r\n[env]\r\n'BL_ENV' = \"dev\"\r\n", map[string]string{"workspace": "a\u00e9\tb", "env.BL_ENV": "dev"}},
		{"empty", "", map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("Parse = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
		msg      string
	}{
		{"missing quotes", "# c\nworkspace = acme\n", 2, "missing its quotes"},
		{"no equals", "[env]\nBL_API_KEY \"k\"\n", 2, "expected ="},
		{"unterminated string", "a = 1\n\nworkspace = \"acme\n", 3, "unterminated string"},
		{"unterminated multi-line", "x = 1\ns = \"\"\"\nabc\n", 2, "unterminated multi-line"},
		{"unterminated array", "a = [1,\n2,\n", 1, "unterminated array"},
		{"header", "[env\nA = \"b\"\n", 1, "must end with ]"},
		{"twice", "workspace = \"a\"\nworkspace = \"b\"\n", 2, "set twice"},
		{"table twice", "[env]\n[x]\n[env]\n", 3, "defined twice"},
		{"text after value", "workspace = \"a\" \"b\"\n", 1, "unexpected text"},
		{"bad escape", "\n\nworkspace = \"a\\qb\"\n", 3, "unknown escape"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if err == nil {
				t.Fatalf("Parse = %q, want an error", got)
			}
			if err.Line != tc.line || !strings.Contains(err.Msg, tc.msg) {
				t.Errorf("error %v, want line %d and %q", err, tc.line, tc.msg)
			}
			if len(got) != 0 {
				t.Errorf("a broken file gave %q; it must give nothing", got)
			}
		})
	}
}

func TestWorkspaceAndEnv(t *testing.T) {
	vars, _ := Parse([]byte("workspace = \"w\"\n[env]\nBL_API_KEY = \"k\"\n"))
	if Workspace(vars) != "w" {
		t.Errorf("Workspace = %q", Workspace(vars))
	}
	if env := Env(vars); !maps.Equal(env, map[string]string{"BL_API_KEY": "k"}) {
		t.Errorf("Env = %q", env)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("workspace = \"a\"\n[env]\nX = '''y'''\n")
	f.Fuzz(func(t *testing.T, s string) {
		vars, err := Parse([]byte(s))
		if err != nil && len(vars) != 0 {
			t.Fatal("a broken file gave values")
		}
		if err != nil && err.Line < 1 {
			t.Fatalf("line %d", err.Line)
		}
	})
}
