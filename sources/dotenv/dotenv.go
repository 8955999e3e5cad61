package dotenv

import (
	"fmt"
	"regexp"
	"strings"
)

// Error is one line of a .env file that could not be parsed.
// Msg says what is wrong and never quotes the line, which may hold a secret.
type Error struct {
	Line int    // 1-based line on which the broken entry starts
	Msg  string // generic reason, e.g. "unterminated double-quoted value"
}

// Error returns "line N: msg".
func (e Error) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Reasons reported in DotenvError.Msg.
const (
	dotenvMissingEquals      = "missing '=' after the key"
	dotenvBadKey             = "invalid key: a key must match [A-Za-z_][A-Za-z0-9_.-]*"
	dotenvUnterminatedSingle = "unterminated single-quoted value"
	dotenvUnterminatedBack   = "unterminated backtick-quoted value"
	dotenvUnterminatedDouble = "unterminated double-quoted value"
	dotenvTextAfterQuote     = "unexpected text after the closing quote"
	dotenvNUL                = "value contains a NUL byte"
)

// Parse parses the contents of a .env file. It never fails as a whole: lines it cannot parse are
// returned as errors and every other line still counts. A later assignment to a key replaces an
// earlier one; a broken line leaves any earlier value of its key in place. Values are taken
// literally: ${VAR} is not expanded. The returned map is never nil.
//
// The accepted syntax is specified in docs/SOURCES-FORMATS.md.
func Parse(data []byte) (map[string]string, []Error) {
	vars, _, errs := ParseLines(data)
	return vars, errs
}

// ParseLines is Parse, and also returns, for each key, the 1-based line on which the
// assignment that counts (the last) starts.
func ParseLines(data []byte) (vars map[string]string, lines map[string]int, errs []Error) {
	text := strings.TrimPrefix(string(data), "\uFEFF")
	// CRLF, LF and a lone CR each end one line, as in python-dotenv and motdotla/dotenv.
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	rows := strings.Split(text, "\n")

	vars, lines = make(map[string]string), make(map[string]int)
	for i := 0; i < len(rows); {
		e := parseDotenvEntry(rows, i)
		switch {
		case e.msg != "":
			errs = append(errs, Error{Line: i + 1, Msg: e.msg})
		case e.key != "":
			vars[e.key], lines[e.key] = e.value, i+1
		}
		i = e.next
	}
	return vars, lines, errs
}

// dotenvEntry is the outcome of parsing the entry that starts on one line: a key and value, an error
// message, or neither (a blank or comment line). next is the index of the line to parse after it.
type dotenvEntry struct {
	key, value, msg string
	next            int
}

func parseDotenvEntry(lines []string, i int) dotenvEntry {
	fail := func(msg string, next int) dotenvEntry { return dotenvEntry{msg: msg, next: next} }

	line := strings.TrimLeft(lines[i], " \t")
	if line == "" || line[0] == '#' {
		return dotenvEntry{next: i + 1}
	}
	if rest, ok := strings.CutPrefix(line, "export"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
		// "export = x" assigns the key "export"; "export KEY=x" assigns KEY.
		if r := strings.TrimLeft(rest, " \t"); r != "" && r[0] != '=' {
			line = r
		}
	}

	end := strings.IndexAny(line, "= \t")
	if end < 0 {
		return fail(dotenvMissingEquals, i+1)
	}
	key := line[:end]
	rest := strings.TrimLeft(line[end:], " \t")
	if rest == "" || rest[0] != '=' {
		return fail(dotenvMissingEquals, i+1)
	}
	if !validDotenvKey(key) {
		return fail(dotenvBadKey, i+1)
	}

	raw := rest[1:] // everything after '=', leading blanks included
	v := strings.TrimLeft(raw, " \t")
	var value, tail string
	next := i + 1
	switch {
	case v == "":
		// KEY= gives the empty string.
	case v[0] == '\'' || v[0] == '`':
		j := strings.IndexByte(v[1:], v[0])
		if j < 0 {
			if v[0] == '\'' {
				return fail(dotenvUnterminatedSingle, i+1)
			}
			return fail(dotenvUnterminatedBack, i+1)
		}
		value, tail = v[1:1+j], v[2+j:]
	case v[0] == '"':
		var ok bool
		value, tail, next, ok = scanDoubleQuoted(lines, i, v[1:])
		if !ok {
			return fail(dotenvUnterminatedDouble, i+1)
		}
	default:
		value = strings.Trim(stripInlineComment(raw), " \t")
	}

	if t := strings.TrimLeft(tail, " \t"); t != "" && t[0] != '#' {
		// The quotes did not delimit the value the way the author meant: resume right after the
		// opening line rather than after a closing quote that may belong to a later entry.
		return fail(dotenvTextAfterQuote, i+1)
	}
	if strings.IndexByte(value, 0) >= 0 {
		return fail(dotenvNUL, next)
	}
	return dotenvEntry{key: key, value: value, next: next}
}

// scanDoubleQuoted reads a double-quoted value whose text starts with s, the rest of line i after the
// opening quote, and may continue on the following lines. It returns the unescaped value, the text after
// the closing quote, the index of the line after the closing one, and false if no closing quote exists.
func scanDoubleQuoted(lines []string, i int, s string) (value, tail string, next int, ok bool) {
	var b strings.Builder
	for j := i; ; {
		for k := 0; k < len(s); k++ {
			switch c := s[k]; c {
			case '"':
				return b.String(), s[k+1:], j + 1, true
			case '\\':
				if k+1 < len(s) {
					if r, known := dotenvEscapes[s[k+1]]; known {
						b.WriteByte(r)
						k++
						continue
					}
				}
				b.WriteByte(c) // an unknown escape is kept as written, backslash included
			default:
				b.WriteByte(c)
			}
		}
		j++
		if j >= len(lines) {
			return "", "", i + 1, false
		}
		b.WriteByte('\n')
		s = lines[j]
	}
}

// dotenvEscapes decode the character after a backslash in a double-quoted value.
var dotenvEscapes = map[byte]byte{'n': '\n', 'r': '\r', 't': '\t', '"': '"', '\\': '\\'}

// stripInlineComment cuts an unquoted value at the first '#' that follows a space or a tab. raw starts
// right after '=', so in "KEY= #x" the '#' follows a blank and the value is empty, while "KEY=#x" is "#x".
func stripInlineComment(raw string) string {
	for k := 1; k < len(raw); k++ {
		if raw[k] == '#' && (raw[k-1] == ' ' || raw[k-1] == '\t') {
			return raw[:k]
		}
	}
	return raw
}

// validDotenvKey reports whether key matches [A-Za-z_][A-Za-z0-9_.-]*.
var validDotenvKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`).MatchString
