// Package blaxeltoml reads what Blaxel's tools take from a project's blaxel.toml: its top-level
// string keys (bl takes workspace) and the string values of its [env] table (the TypeScript SDK
// takes them as variables). It is a minimal TOML reader: it walks the whole file, so that a file
// that is not TOML is an error naming its line, and skips every other value.
//
// How the resolver ranks what it reads is described in docs/SOURCES.md.
package blaxeltoml

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Name is the file read from a caller's directory, as bl and the TypeScript SDK read it: in the
// working directory only, never a parent.
const Name = "blaxel.toml"

// EnvPrefix starts the key of an [env] value in the map Parse returns.
const EnvPrefix = "env."

// Error is where a blaxel.toml stops being TOML. Msg never quotes the file, which may hold a
// secret.
type Error struct {
	Line int
	Msg  string
}

// Error returns "line N: msg".
func (e *Error) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Parse reads a blaxel.toml. It returns its top-level string values under their own key (only
// keys without a dot) and its [env] table's string values under EnvPrefix+key; other values and
// tables are skipped. A file that does not parse gives nothing and an error naming the line, as
// Blaxel's tools then take nothing from it. The map is never nil.
func Parse(data []byte) (map[string]string, *Error) {
	p := &parser{s: strings.TrimPrefix(string(data), "\uFEFF"), line: 1, out: map[string]string{}, tables: map[string]bool{}}
	if !utf8.ValidString(p.s) {
		return map[string]string{}, &Error{Line: 1, Msg: "not UTF-8 text"}
	}
	if err := p.document(); err != nil {
		return map[string]string{}, err
	}
	return p.out, nil
}

// Workspace is the top-level workspace of a parsed file, "" when it has none.
func Workspace(vars map[string]string) string { return vars["workspace"] }

// Env returns the [env] values of a parsed file, nil when it has none.
func Env(vars map[string]string) map[string]string {
	var env map[string]string
	for k, v := range vars {
		if name, ok := strings.CutPrefix(k, EnvPrefix); ok {
			if env == nil {
				env = map[string]string{}
			}
			env[name] = v
		}
	}
	return env
}

type parser struct {
	s      string
	i      int
	line   int
	table  []string // the current [table]; nil at the top level
	inEnv  bool     // the current table is [env] (not [[env]])
	out    map[string]string
	tables map[string]bool // the [tables] defined, to refuse one defined twice
}

func (p *parser) fail(format string, a ...any) *Error {
	return &Error{Line: p.line, Msg: fmt.Sprintf(format, a...)}
}

func (p *parser) eof() bool  { return p.i >= len(p.s) }
func (p *parser) peek() byte { return p.s[p.i] }

// blanks skips spaces and tabs.
func (p *parser) blanks() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

// newline consumes a line end (LF or CRLF) if there is one.
func (p *parser) newline() bool {
	if strings.HasPrefix(p.s[p.i:], "\r\n") {
		p.i += 2
	} else if !p.eof() && p.peek() == '\n' {
		p.i++
	} else {
		return false
	}
	p.line++
	return true
}

// comment skips a comment to the end of its line.
func (p *parser) comment() {
	if !p.eof() && p.peek() == '#' {
		for !p.eof() && p.peek() != '\n' && p.peek() != '\r' {
			p.i++
		}
	}
}

// space skips blanks, comments and line ends (between lines, and inside arrays).
func (p *parser) space() {
	for {
		p.blanks()
		p.comment()
		if !p.newline() {
			return
		}
	}
}

// endOfLine requires nothing but blanks and a comment before the line ends.
func (p *parser) endOfLine() *Error {
	p.blanks()
	p.comment()
	if p.eof() || p.newline() {
		return nil
	}
	return p.fail("unexpected text after the value (one key = value per line)")
}

func (p *parser) document() *Error {
	for {
		p.space()
		if p.eof() {
			return nil
		}
		var err *Error
		if p.peek() == '[' {
			err = p.header()
		} else {
			err = p.keyValue(p.table, p.inEnv)
		}
		if err == nil {
			err = p.endOfLine()
		}
		if err != nil {
			return err
		}
	}
}

// header reads [table] or [[array.of.tables]].
func (p *parser) header() *Error {
	array := strings.HasPrefix(p.s[p.i:], "[[")
	p.i++
	if array {
		p.i++
	}
	p.blanks()
	keys, err := p.key()
	if err != nil {
		return err
	}
	p.blanks()
	closing := "]"
	if array {
		closing = "]]"
	}
	if !strings.HasPrefix(p.s[p.i:], closing) {
		return p.fail("a table header must end with %s", closing)
	}
	p.i += len(closing)
	name := strings.Join(keys, "\x00")
	if !array {
		if p.tables[name] {
			return p.fail("table [%s] is defined twice", strings.Join(keys, "."))
		}
		p.tables[name] = true
	}
	p.table, p.inEnv = keys, !array && len(keys) == 1 && keys[0] == "env"
	return nil
}

// keyValue reads key = value in table, recording a string value that Parse returns.
func (p *parser) keyValue(table []string, inEnv bool) *Error {
	keys, err := p.key()
	if err != nil {
		return err
	}
	p.blanks()
	if p.eof() || p.peek() != '=' {
		return p.fail("expected = after the key")
	}
	p.i++
	p.blanks()
	path := append(append([]string(nil), table...), keys...)
	s, isString, err := p.value(path)
	if err != nil || !isString {
		return err
	}
	var name string
	switch {
	case len(path) == 1 && table == nil && !strings.Contains(path[0], "."):
		name = path[0]
	case len(path) == 2 && path[0] == "env" && (inEnv || table == nil):
		name = EnvPrefix + path[1]
	default:
		return nil
	}
	if _, dup := p.out[name]; dup {
		return p.fail("%s is set twice", strings.Join(path, "."))
	}
	p.out[name] = s
	return nil
}

// key reads a key, dotted or not, bare or quoted.
func (p *parser) key() ([]string, *Error) {
	var keys []string
	for {
		var k string
		switch {
		case p.eof():
			return nil, p.fail("expected a key")
		case p.peek() == '"' || p.peek() == '\'':
			if strings.HasPrefix(p.s[p.i:], `"""`) || strings.HasPrefix(p.s[p.i:], "'''") {
				return nil, p.fail("a key cannot be a multi-line string")
			}
			var err *Error
			if k, err = p.str(); err != nil {
				return nil, err
			}
		default:
			j := p.i
			for j < len(p.s) && bareKeyChar(p.s[j]) {
				j++
			}
			if j == p.i {
				return nil, p.fail("expected a key (letters, digits, _ and -, or a quoted key)")
			}
			k, p.i = p.s[p.i:j], j
		}
		keys = append(keys, k)
		p.blanks()
		if p.eof() || p.peek() != '.' {
			return keys, nil
		}
		p.i++
		p.blanks()
	}
}

func bareKeyChar(c byte) bool {
	return c == '_' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// value reads one value; it returns the text of a string, and records the string values of an
// inline table under path.
func (p *parser) value(path []string) (string, bool, *Error) {
	if p.eof() {
		return "", false, p.fail("expected a value after =")
	}
	switch p.peek() {
	case '"', '\'':
		s, err := p.str()
		return s, err == nil, err
	case '[':
		return "", false, p.array()
	case '{':
		return "", false, p.inlineTable(path)
	}
	return "", false, p.scalar()
}

// array reads [v, v, …], over several lines if need be.
func (p *parser) array() *Error {
	return p.list("array", ']', func() *Error { _, _, err := p.value(nil); return err })
}

// inlineTable reads {k = v, …}; its string values count as if set under path.
func (p *parser) inlineTable(path []string) *Error {
	inEnv := len(path) == 1 && path[0] == "env"
	if path == nil { // inside an array: nothing in it counts
		path = []string{"\x00"}
	}
	return p.list("inline table", '}', func() *Error { return p.keyValue(path, inEnv) })
}

// list reads the comma-separated items of an array or an inline table (what), from its opening
// bracket to close, with item.
func (p *parser) list(what string, close byte, item func() *Error) *Error {
	start := p.line
	p.i++
	for {
		p.space()
		if p.eof() {
			return &Error{Line: start, Msg: fmt.Sprintf("unterminated %s (no closing %c)", what, close)}
		}
		if p.peek() == close {
			p.i++
			return nil
		}
		if err := item(); err != nil {
			return err
		}
		p.space()
		if !p.eof() && p.peek() == ',' {
			p.i++
		} else if p.eof() || p.peek() != close {
			return p.fail("expected , or %c in an %s", close, what)
		}
	}
}

// scalar reads a number, a boolean or a date, which Parse does not return: it checks only that
// the value is one of those.
func (p *parser) scalar() *Error {
	j := p.i
	for j < len(p.s) && scalarChar(p.s[j]) {
		j++
		// A date and a time may be separated by one space: 1979-05-27 07:32:00.
		if j+1 < len(p.s) && p.s[j] == ' ' && j-p.i == 10 && p.s[p.i+4] == '-' && '0' <= p.s[j+1] && p.s[j+1] <= '9' {
			j++
		}
	}
	tok := p.s[p.i:j]
	switch {
	case tok == "":
		return p.fail("expected a value after = (a quoted string, a number, true or false, an array or a table)")
	case tok == "true" || tok == "false" || tok == "inf" || tok == "nan" || tok == "+inf" || tok == "-inf" || tok == "+nan" || tok == "-nan":
	case tok[0] >= '0' && tok[0] <= '9' || tok[0] == '+' || tok[0] == '-':
	default:
		return p.fail("a value that is not a quoted string, a number, true or false, an array or a table (is a string missing its quotes?)")
	}
	p.i = j
	return nil
}

func scalarChar(c byte) bool {
	return bareKeyChar(c) || c == '+' || c == '.' || c == ':'
}

// str reads a basic or literal string, single- or multi-line, at p.i.
func (p *parser) str() (string, *Error) {
	q := p.s[p.i : p.i+1]
	if strings.HasPrefix(p.s[p.i:], q+q+q) {
		return p.multiline(q)
	}
	start := p.i + 1
	var b strings.Builder
	for j := start; j < len(p.s); j++ {
		c := p.s[j]
		switch {
		case c == q[0]:
			p.i = j + 1
			return b.String(), nil
		case c == '\n' || c == '\r':
			return "", p.fail("unterminated string (a string in quotes ends on its line; use \"\"\" for several lines)")
		case c == '\\' && q == `"`:
			r, n, err := p.escape(j)
			if err != nil {
				return "", err
			}
			b.WriteString(r)
			j += n - 1
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", p.fail("a control character in a string")
		default:
			b.WriteByte(c)
		}
	}
	return "", p.fail("unterminated string")
}

// multiline reads a multi-line string (three quotes, double or single), which may span lines.
func (p *parser) multiline(q string) (string, *Error) {
	startLine := p.line
	p.i += 3
	if p.newline() { // a line end right after the opening quotes is dropped
		startLine = p.line - 1
	}
	var b strings.Builder
	for !p.eof() {
		if strings.HasPrefix(p.s[p.i:], q+q+q) {
			p.i += 3
			for k := 0; k < 2 && !p.eof() && p.s[p.i:p.i+1] == q; k++ { // up to two quotes end the string
				b.WriteString(q)
				p.i++
			}
			return b.String(), nil
		}
		c := p.peek()
		switch {
		case c == '\n' || c == '\r' && strings.HasPrefix(p.s[p.i:], "\r\n"):
			p.newline()
			b.WriteByte('\n')
		case c == '\\' && q == `"`:
			if err := p.multilineEscape(&b); err != nil {
				return "", err
			}
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", p.fail("a control character in a string")
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return "", &Error{Line: startLine, Msg: "unterminated multi-line string (no closing " + q + q + q + ")"}
}

// multilineEscape reads an escape of a """ string, including a backslash at the end of a line,
// which drops the line end and the blanks after it.
func (p *parser) multilineEscape(b *strings.Builder) *Error {
	j := p.i + 1
	for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
		j++
	}
	if j < len(p.s) && (p.s[j] == '\n' || p.s[j] == '\r') {
		p.i = j
		for {
			p.blanks()
			if !p.newline() {
				return nil
			}
		}
	}
	r, n, err := p.escape(p.i)
	if err != nil {
		return err
	}
	b.WriteString(r)
	p.i += n
	return nil
}

// tomlEscapes decode the one-character escapes of a basic string.
var tomlEscapes = map[byte]string{'b': "\b", 't': "\t", 'n': "\n", 'f': "\f", 'r': "\r", 'e': "\x1b", '"': `"`, '\\': `\`}

// escape decodes the escape at p.s[j] (a backslash); it returns the text and its length.
func (p *parser) escape(j int) (string, int, *Error) {
	if j+1 >= len(p.s) {
		return "", 0, p.fail("unterminated string")
	}
	c := p.s[j+1]
	if r, ok := tomlEscapes[c]; ok {
		return r, 2, nil
	}
	if n, ok := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]; ok {
		if j+2+n > len(p.s) {
			return "", 0, p.fail("a \\%c escape needs %d hexadecimal digits", c, n)
		}
		v, err := strconv.ParseUint(p.s[j+2:j+2+n], 16, 32)
		if err != nil || !utf8.ValidRune(rune(v)) {
			return "", 0, p.fail("a \\%c escape needs %d hexadecimal digits of a Unicode scalar value", c, n)
		}
		return string(rune(v)), 2 + n, nil
	}
	return "", 0, p.fail("unknown escape in a string (\\b \\t \\n \\f \\r \\e \\\" \\\\ \\xHH \\uXXXX \\UXXXXXXXX)")
}
