package dotenv

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseDotenv(t *testing.T) {
	type vars = map[string]string
	tests := []struct {
		name string
		in   string
		want vars
		errs []Error
	}{
		{name: "empty input", in: "", want: vars{}},
		{name: "simple", in: "BL_WORKSPACE=acme\nBL_API_KEY=bl_FAKE\n", want: vars{"BL_WORKSPACE": "acme", "BL_API_KEY": "bl_FAKE"}},
		{name: "no final newline", in: "A=1", want: vars{"A": "1"}},
		{name: "utf-8 BOM at start", in: "\uFEFFA=1\n", want: vars{"A": "1"}},
		{name: "BOM only at start", in: "A=\uFEFFx\n", want: vars{"A": "\uFEFFx"}},
		{name: "CRLF line ends", in: "A=1\r\nB=2\r\n", want: vars{"A": "1", "B": "2"}},
		{name: "lone CR ends a line", in: "A=1\rB=2\r", want: vars{"A": "1", "B": "2"}},
		{name: "CRLF inside multi-line value becomes LF", in: "A=\"x\r\ny\"\r\n", want: vars{"A": "x\ny"}},
		{name: "blank and white lines", in: "\n   \n\t\nA=1\n\n", want: vars{"A": "1"}},
		{name: "comment lines", in: "# a comment\n   # indented comment\nA=1\n#B=2\n", want: vars{"A": "1"}},
		{name: "indented entry", in: "   A=1\n", want: vars{"A": "1"}},
		{name: "export prefix", in: "export A=1\nexport\tB=2\nexport   C = 3\n", want: vars{"A": "1", "B": "2", "C": "3"}},
		{name: "key named export", in: "export=1\n", want: vars{"export": "1"}},
		{name: "key named export with spaces", in: "export = 1\n", want: vars{"export": "1"}},
		{name: "export-prefixed key name", in: "exportA=1\n", want: vars{"exportA": "1"}},
		{name: "export without assignment", in: "export A\n", want: vars{}, errs: []Error{{1, dotenvMissingEquals}}},
		{name: "spaces around equals", in: "A = 1\nB\t=\t2\nC= 3\nD =4\n", want: vars{"A": "1", "B": "2", "C": "3", "D": "4"}},
		{name: "unquoted value trimmed", in: "A=   spaced out \t \n", want: vars{"A": "spaced out"}},
		{name: "unquoted inner spaces kept", in: "A=a  b\n", want: vars{"A": "a  b"}},
		{name: "inline comment after space", in: "A=value # comment\n", want: vars{"A": "value"}},
		{name: "inline comment after tab", in: "A=value\t# comment\n", want: vars{"A": "value"}},
		{name: "hash without space is part of value", in: "A=abc#def\n", want: vars{"A": "abc#def"}},
		{name: "value starting with hash", in: "A=#abc\n", want: vars{"A": "#abc"}},
		{name: "blank then hash is a comment", in: "A= #abc\n", want: vars{"A": ""}},
		{name: "second hash after first", in: "A=a#b #c #d\n", want: vars{"A": "a#b"}},
		{name: "equals inside value", in: "A=b=c==\n", want: vars{"A": "b=c=="}},
		{name: "quotes inside unquoted value kept", in: "A=it's \"x\"\n", want: vars{"A": "it's \"x\""}},
		{name: "empty value", in: "A=\nB=   \nC=\"\"\nD=''\nE=``\n", want: vars{"A": "", "B": "", "C": "", "D": "", "E": ""}},
		{name: "single quotes literal", in: `A='a\nb "c" $X #d'` + "\n", want: vars{"A": `a\nb "c" $X #d`}},
		{name: "single quotes keep spaces", in: "A='  x  '\n", want: vars{"A": "  x  "}},
		{name: "backticks literal", in: "A=`it's \"x\" \\n`\n", want: vars{"A": `it's "x" \n`}},
		{name: "double quote escapes", in: `A="a\nb\rc\td\"e\\f"` + "\n", want: vars{"A": "a\nb\rc\td\"e\\f"}},
		{name: "double quote unknown escape kept", in: `A="C:\x\$Y\'"` + "\n", want: vars{"A": `C:\x\$Y\'`}},
		{name: "double quote hash kept", in: `A="a # b"` + "\n", want: vars{"A": "a # b"}},
		{name: "escaped backslash before quote", in: `A="x\\"` + "\n", want: vars{"A": `x\`}},
		{name: "comment after quoted value", in: "A=\"x\" # c\nB='y'# c\nC=\"z\"   \n", want: vars{"A": "x", "B": "y", "C": "z"}},
		{name: "multi-line double quoted", in: "A=\"line1\nline2\n\n  line4\"\nB=2\n", want: vars{"A": "line1\nline2\n\n  line4", "B": "2"}},
		{name: "multi-line with escaped quote", in: "A=\"a\\\"\nb\"\n", want: vars{"A": "a\"\nb"}},
		{name: "backslash before line end kept", in: "A=\"a\\\nb\"\n", want: vars{"A": "a\\\nb"}},
		{name: "no expansion", in: "A=${HOME}/x\nB=\"$USER ${X:-y}\"\n", want: vars{"A": "${HOME}/x", "B": "$USER ${X:-y}"}},
		{name: "later duplicate wins", in: "A=1\nA=2\n", want: vars{"A": "2"}},
		{name: "key characters", in: "_A.b-c9=1\na=2\n", want: vars{"_A.b-c9": "1", "a": "2"}},
		{name: "utf-8 value", in: "A=héllo wörld ✓\n", want: vars{"A": "héllo wörld ✓"}},
		{name: "missing equals", in: "JUSTAKEY\nB=2\n", want: vars{"B": "2"}, errs: []Error{{1, dotenvMissingEquals}}},
		{name: "secret pasted alone", in: "A=1\nbl_secret_key_without_name\n", want: vars{"A": "1"}, errs: []Error{{2, dotenvMissingEquals}}},
		{name: "space inside key", in: "MY KEY=1\n", want: vars{}, errs: []Error{{1, dotenvMissingEquals}}},
		{name: "empty key", in: "=1\n", want: vars{}, errs: []Error{{1, dotenvBadKey}}},
		{name: "key starting with digit", in: "1A=1\n", want: vars{}, errs: []Error{{1, dotenvBadKey}}},
		{name: "key with bad character", in: "A$B=1\nA/B=2\n", want: vars{}, errs: []Error{{1, dotenvBadKey}, {2, dotenvBadKey}}},
		{name: "colon separator not accepted", in: "A: 1\n", want: vars{}, errs: []Error{{1, dotenvMissingEquals}}},
		{name: "unterminated single quote", in: "A='abc\nB=2\n", want: vars{"B": "2"}, errs: []Error{{1, dotenvUnterminatedSingle}}},
		{name: "single quotes are one line", in: "A='a\nb'\n", want: vars{}, errs: []Error{{1, dotenvUnterminatedSingle}, {2, dotenvMissingEquals}}},
		{name: "unterminated backtick", in: "A=`abc\nB=2\n", want: vars{"B": "2"}, errs: []Error{{1, dotenvUnterminatedBack}}},
		{name: "unterminated double quote resumes after opening line", in: "A=1\nB=\"abc\nC=3\nD=4\n", want: vars{"A": "1", "C": "3", "D": "4"}, errs: []Error{{2, dotenvUnterminatedDouble}}},
		{name: "unterminated double quote at end", in: "A=\"abc\\\"", want: vars{}, errs: []Error{{1, dotenvUnterminatedDouble}}},
		{name: "stray double quote met later", in: "A=\"abc\nB=\"x\"\nC=3\n", want: vars{"B": "x", "C": "3"}, errs: []Error{{1, dotenvTextAfterQuote}}},
		{name: "text after closing quote", in: "A=\"x\"y\nB='x' y\nC=2\n", want: vars{"C": "2"}, errs: []Error{{1, dotenvTextAfterQuote}, {2, dotenvTextAfterQuote}}},
		{name: "broken line keeps earlier value", in: "A=1\nA='x\n", want: vars{"A": "1"}, errs: []Error{{2, dotenvUnterminatedSingle}}},
		{name: "NUL in unquoted value", in: "A=a\x00b\nB=2\n", want: vars{"B": "2"}, errs: []Error{{1, dotenvNUL}}},
		{name: "NUL in multi-line value resumes after it", in: "A=\"a\n\x00\"\nB=2\n", want: vars{"B": "2"}, errs: []Error{{1, dotenvNUL}}},
		{name: "NUL in comment ignored", in: "# \x00\nA=1 # \x00\n", want: vars{"A": "1"}},
		{name: "NUL in key", in: "A\x00=1\n", want: vars{}, errs: []Error{{1, dotenvBadKey}}},
		{name: "line numbers count CRLF once", in: "A=1\r\n\r\nbad\r\n", want: vars{"A": "1"}, errs: []Error{{3, dotenvMissingEquals}}},
		{name: "line number after multi-line value", in: "A=\"x\ny\"\nbad\n", want: vars{"A": "x\ny"}, errs: []Error{{3, dotenvMissingEquals}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := Parse([]byte(tt.in))
			if !maps.Equal(got, tt.want) {
				t.Errorf("vars = %q, want %q", got, tt.want)
			}
			if !slices.Equal(errs, tt.errs) {
				t.Errorf("errors = %v, want %v", errs, tt.errs)
			}
		})
	}
}

func TestDotenvErrorNeverQuotesTheLine(t *testing.T) {
	const secret = "s3cr3t-VALUE"
	in := strings.Join([]string{
		secret,
		"A='" + secret,
		"B=\"" + secret + "\"" + secret,
		secret + "$=1",
		"C=" + secret + "\x00",
		"D=\"" + secret,
	}, "\n")
	_, errs := Parse([]byte(in))
	if len(errs) != 6 {
		t.Fatalf("got %d errors, want 6: %v", len(errs), errs)
	}
	for _, e := range errs {
		if strings.Contains(e.Error(), secret) {
			t.Errorf("error %q quotes the secret", e.Error())
		}
	}
	if got, want := (Error{Line: 7, Msg: "x"}).Error(), "line 7: x"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// formatDotenv writes vars as a .env file that ParseDotenv reads back unchanged: every value
// double-quoted, with the escapes ParseDotenv decodes.
func formatDotenv(vars map[string]string) []byte {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		b.WriteString(k + `="`)
		for _, c := range []byte(vars[k]) {
			switch c {
			case '\\', '"':
				b.WriteByte('\\')
				b.WriteByte(c)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteString("\"\n")
	}
	return []byte(b.String())
}

func FuzzParseDotenv(f *testing.F) {
	for _, seed := range []string{
		"",
		"A=1\nB=2\n",
		"\uFEFFexport A = 'x'\r\n# c\r\nB=\"y\\n\" # c\r\n",
		"A=\"multi\nline\"\nB=`bt`\n",
		"A=\"unterminated\nB=2\n",
		"A='x'y\n=z\n1=2\nA B=1\n",
		"A=a\x00\nB= #c\nC=a#b\n",
		"A=\"\\\\\\\"\\n\\r\\t\\x\"\n",
		"A=\"\rB=\"\n",
		"export\nexport =\nexport  X=\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		vars, errs := Parse(data)
		if vars == nil {
			t.Fatal("nil map")
		}
		lines := 1 + strings.Count(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") +
			strings.Count(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r")
		for _, e := range errs {
			if e.Line < 1 || e.Line > lines {
				t.Errorf("error line %d outside 1..%d", e.Line, lines)
			}
		}
		for k, v := range vars {
			if !validDotenvKey(k) {
				t.Errorf("invalid key %q", k)
			}
			if strings.IndexByte(v, 0) >= 0 {
				t.Errorf("value of %q holds a NUL", k)
			}
		}
		again, errs := Parse(formatDotenv(vars))
		if len(errs) != 0 {
			t.Fatalf("re-serialised output has errors: %v", errs)
		}
		if !reflect.DeepEqual(again, vars) {
			t.Fatalf("round trip: got %q, want %q", again, vars)
		}
	})
}
