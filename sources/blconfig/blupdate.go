package blconfig

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/blauth/blauth/sources"
	"go.yaml.in/yaml/v3"
)

// ErrUneditable is matched by the error of an update that cannot change the file without
// reformatting parts of it that are not the workspace's changed fields (flow style, a value with an
// anchor or a tag, a value over several lines): the update writes nothing rather than rewrite
// what other tools wrote.
var ErrUneditable = errors.New("cannot edit the bl config without reformatting it")

// uneditableError says where and why; it never quotes the file.
type uneditableError struct {
	line   int
	reason string
}

func (e *uneditableError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("%s: line %d: %s", ErrUneditable, e.line, e.reason)
	}
	return fmt.Sprintf("%s: %s", ErrUneditable, e.reason)
}

func (e *uneditableError) Unwrap() error { return ErrUneditable }

func uneditable(line int, format string, args ...any) error {
	return &uneditableError{line, fmt.Sprintf(format, args...)}
}

// blConfigWriteMu serialises UpdateBLCredentials within the process, so that two workspaces updated at
// once both land. bl itself takes no lock, so nothing serialises against it.
var blConfigWriteMu sync.Mutex

// waitBeforeRecheck is how UpdateBLCredentials waits before it reads again a file that is empty or
// looks cut short: bl's truncate and write are microseconds apart, so a file that is the same after
// this is not being written. Tests replace it.
var waitBeforeRecheck = func() { time.Sleep(200 * time.Millisecond) }

// maxUpdateReads bounds how often UpdateBLCredentials reads a file that keeps changing.
const maxUpdateReads = 4

// Update applies fn to the named workspace's credentials in a fresh read of the bl config
// at path and writes the result back, changing nothing else in the file.
//
// The edit is surgical: only the values of the credential fields fn changed are replaced (written as
// bl writes that field, see Marshal), a field the workspace lacks is inserted in its credentials
// mapping with that mapping's indentation and in bl's field order, and a workspace the file lacks is
// appended in bl's format at the end of the workspaces list (before tracking:), unless fn gave it no
// credentials at all. Every other byte stays
// as it was: other workspaces, key spellings (clientCredentials stays clientCredentials), quoting,
// comments, unknown keys, order, a yaml.v2 writer's empty fields. A field fn empties keeps its key,
// with the value "" (or 0). The result is parsed again and must read as the old file with exactly that
// change; if not, or if the change cannot be made without reformatting (flow style, a value with an
// anchor or a tag, a changed value over several lines), it returns an error matching
// ErrBLConfigUneditable and writes nothing. docs/SOURCES-FORMATS.md lists the cases.
//
// The file is replaced atomically: a temporary file in the same directory, mode 0600, synced, renamed
// over path, then the directory synced. Nothing is written when the result is byte-identical. A file
// that is not valid YAML is never overwritten; one that is empty or looks cut short is read again after
// a short wait, since bl may be between its truncate and its write, and used once it reads the same
// twice. A missing file is created in bl's format, with its directory (mode 0700). A FIFO, a device or
// an oversized file is refused without being read, and so is a file or directory another user could
// write (ErrUnsafeFile). A symbolic link at path is followed and its target replaced. Calls are
// serialised within the process; bl takes no lock, so a bl write that lands between this read and the
// rename is lost.
func Update(path, workspace string, fn func(*Credentials)) error {
	if workspace == "" {
		return errors.New("update bl config: the workspace name is empty")
	}
	blConfigWriteMu.Lock()
	defer blConfigWriteMu.Unlock()

	target := path
	if t, err := filepath.EvalSymlinks(path); err == nil {
		target = t
	}
	old, fi, c, torn, err := readForUpdate(target)
	if err != nil {
		return fmt.Errorf("update bl config, nothing written: %w", err)
	}
	if fi != nil {
		if err := checkBLConfigSafe(path, fi); err != nil {
			return fmt.Errorf("update bl config, nothing written: %w", err)
		}
	}
	var cur Credentials
	ws, found := c.Workspace(workspace)
	if found {
		cur = ws.Credentials
	}
	next := cur
	fn(&next)
	next.ExpiresIn = max(next.ExpiresIn, 0)
	if !found && next == (Credentials{}) {
		return nil // nothing to store for a workspace the file does not have
	}
	for _, s := range []string{next.APIKey, next.AccessToken, next.RefreshToken, next.DeviceCode, next.ClientCredentials} {
		if !utf8.ValidString(s) {
			return fmt.Errorf("update bl config for workspace %q, nothing written: a credential is not valid UTF-8", workspace)
		}
	}

	var data []byte
	if len(bytes.Trim(old, " \t\r\n")) == 0 {
		// No file, or an empty one (so no workspace either): write it whole, in bl's format.
		c.Workspaces = []Workspace{{Name: workspace, Credentials: next}}
		data = c.Marshal()
	} else if data, err = editBLConfig(old, c, torn, workspace, next); err != nil {
		return fmt.Errorf("update bl config %s for workspace %q, nothing written: %w", target, workspace, err)
	}
	if bytes.Equal(data, old) {
		return nil
	}
	if err := writeFileAtomic(target, data); err != nil {
		return fmt.Errorf("update bl config: %w", err)
	}
	return nil
}

// readForUpdate reads the config that UpdateBLCredentials starts from: the file's bytes and fstat (nil
// when it does not exist), its config, and whether it looks cut short (read twice the same, so believed).
func readForUpdate(path string) (data []byte, fi os.FileInfo, c *Config, torn bool, err error) {
	var lastErr error
	read := func() ([]byte, fs.FileInfo, error) { return sources.ReadBounded(path, sources.MaxBLConfigBytes) }
	for attempt := 0; attempt < maxUpdateReads; attempt++ {
		if attempt > 0 {
			waitBeforeRecheck()
		}
		data, fi, err = read()
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return nil, nil, nil, false, err
			}
			return nil, nil, &Config{}, false, nil
		}
		if err != nil {
			return nil, nil, nil, false, err
		}
		c, err = Parse(data)
		switch {
		case err == nil:
			return data, fi, c, false, nil
		case errors.Is(err, ErrEmpty):
			if attempt > 0 {
				return data, fi, c, false, nil // still empty: the user emptied it
			}
		default:
			// Invalid or maybe cut short: read again; the same bytes twice are not a write in progress.
			lastErr = fmt.Errorf("%s: %w", path, err)
			if sameOnRecheck(data, fi, waitBeforeRecheck, read) {
				if errors.Is(err, ErrMaybeTorn) {
					return data, fi, c, true, nil // a file written by hand
				}
				return nil, nil, nil, false, lastErr // invalid, and staying so
			}
			attempt++ // the read after the wait counts
		}
	}
	return nil, nil, nil, false, fmt.Errorf("%w (it kept changing while being read)", cmp.Or(lastErr, fmt.Errorf("%s keeps changing", path)))
}

// blCredField is one credential field as bl writes it.
type blCredField struct {
	keys   []string // the keys that hold it in a file; bl writes the first
	quoted bool     // bl double-quotes its value
	get    func(Credentials) string
}

// blCredFields are the credential fields in bl's order.
var blCredFields = []blCredField{
	{[]string{"apiKey"}, true, func(c Credentials) string { return c.APIKey }},
	{[]string{"access_token"}, false, func(c Credentials) string { return c.AccessToken }},
	{[]string{"refresh_token"}, false, func(c Credentials) string { return c.RefreshToken }},
	{[]string{"expires_in"}, false, func(c Credentials) string {
		if c.ExpiresIn > 0 {
			return strconv.Itoa(c.ExpiresIn)
		}
		return ""
	}},
	{[]string{"device_code"}, false, func(c Credentials) string { return c.DeviceCode }},
	{[]string{"client_credentials", "clientCredentials"}, true, func(c Credentials) string { return c.ClientCredentials }},
}

// text is v as bl writes the field; an emptied field that keeps its key is "" (0 for expires_in).
func (f blCredField) text(v string) string {
	switch {
	case f.keys[0] == "expires_in":
		return cmp.Or(v, "0")
	case v == "":
		return `""`
	case f.quoted:
		return quotedYAML(v)
	}
	return plainYAML(v)
}

// generic is v as yaml.v3 decodes text(v) into an interface{}.
func (f blCredField) generic(v string) any {
	if f.keys[0] == "expires_in" {
		n, _ := strconv.Atoi(v)
		return n
	}
	return v
}

// fieldLine is the line that writes field f with value v at indent, as bl writes it, and records
// in t.set how a generic decode reads it.
func (t *blText) fieldLine(indent string, f blCredField, v string) string {
	t.set[f.keys[0]] = f.generic(v)
	return indent + f.keys[0] + ": " + f.text(v) + t.eol
}

// blFieldIndex gives a credential key's place in bl's order, or -1.
func blFieldIndex(key string) int {
	return slices.IndexFunc(blCredFields, func(f blCredField) bool { return slices.Contains(f.keys, key) })
}

// blEdit replaces data[start:end] with text (an insertion when start == end).
type blEdit struct {
	start, end int
	text       string
}

// blText is the file's bytes with the offsets of its lines, as yaml.v3 counts them.
type blText struct {
	data       []byte
	lineStarts []int  // offset of each line's first byte; line 1 starts after a byte order mark
	eol        string // the file's line ending, for inserted lines
	// set is how a generic decode reads each credentials key the edit writes, for the check
	// that the edited file reads as intended.
	set map[string]any
}

func newBLText(data []byte) *blText {
	t := &blText{data: data, eol: "\n", set: map[string]any{}}
	start := 0
	if bytes.HasPrefix(data, []byte("\uFEFF")) {
		start = 3
	}
	t.lineStarts = []int{start}
	eolSeen := false
	for i := start; i < len(data); {
		n := t.breakLen(i)
		if n == 0 {
			i++
			continue
		}
		if !eolSeen && (data[i] == '\n' || data[i] == '\r') {
			t.eol, eolSeen = string(data[i:i+n]), true
		}
		i += n
		t.lineStarts = append(t.lineStarts, i)
	}
	return t
}

// breakLen is the length of the line break at i, or 0. yaml.v3 breaks lines at CR LF, CR, LF, NEL,
// LS and PS.
func (t *blText) breakLen(i int) int {
	d := t.data
	switch {
	case d[i] == '\r' && i+1 < len(d) && d[i+1] == '\n':
		return 2
	case d[i] == '\r' || d[i] == '\n':
		return 1
	case d[i] == 0xC2 && i+1 < len(d) && d[i+1] == 0x85:
		return 2
	case d[i] == 0xE2 && i+2 < len(d) && d[i+1] == 0x80 && (d[i+2] == 0xA8 || d[i+2] == 0xA9):
		return 3
	}
	return 0
}

// offset is the byte offset of a node's 1-based line and column (a column counts characters).
func (t *blText) offset(line, col int) (int, bool) {
	if line < 1 || line > len(t.lineStarts) || col < 1 {
		return 0, false
	}
	off := t.lineStarts[line-1]
	for k := 1; k < col; k++ {
		if off >= len(t.data) || t.breakLen(off) > 0 {
			return 0, false
		}
		_, size := utf8.DecodeRune(t.data[off:])
		off += size
	}
	return off, true
}

// lineEnd is the offset of the line break that ends the line holding off (or the end of the file).
func (t *blText) lineEnd(off int) int {
	for off < len(t.data) && t.breakLen(off) == 0 {
		off++
	}
	return off
}

// lineOf is the 1-based line holding off.
func (t *blText) lineOf(off int) int {
	return sort.Search(len(t.lineStarts), func(i int) bool { return t.lineStarts[i] > off })
}

// nextLineStart is where the line after line (1-based) starts, or the end of the file.
func (t *blText) nextLineStart(line int) int {
	if line < len(t.lineStarts) {
		return t.lineStarts[line]
	}
	return len(t.data)
}

// blankOrComment reports whether the text from off to the end of its line is only blanks, or blanks
// and a comment.
func (t *blText) blankOrComment(off int) bool {
	rest := strings.TrimLeft(string(t.data[off:t.lineEnd(off)]), " \t")
	return rest == "" || rest[0] == '#'
}

// keyLineStart is where the line of key k starts; k must be the first thing on its line.
func (t *blText) keyLineStart(k *yaml.Node) (int, error) {
	off, ok := t.offset(k.Line, k.Column)
	if !ok {
		return 0, uneditable(k.Line, "cannot locate a key")
	}
	ls := t.lineStarts[k.Line-1]
	if strings.Trim(string(t.data[ls:off]), " ") != "" {
		return 0, uneditable(k.Line, "a key does not start its line")
	}
	return ls, nil
}

// valueSpan is the byte span of a single-line value: a scalar written plain, single- or double-quoted,
// or an alias. A null written as nothing at all gives an empty span right after its key's colon.
func (t *blText) valueSpan(v *yaml.Node) (start, end int, err error) {
	if v.Anchor != "" {
		return 0, 0, uneditable(v.Line, "the value has an anchor (&), which other entries may refer to")
	}
	start, ok := t.offset(v.Line, v.Column)
	if !ok || start > len(t.data) {
		return 0, 0, uneditable(v.Line, "cannot locate a value")
	}
	d := t.data
	switch {
	case v.Kind == yaml.AliasNode:
		if start >= len(d) || d[start] != '*' {
			return 0, 0, uneditable(v.Line, "cannot locate an alias")
		}
		end = start + 1
		for end < len(d) && !strings.ContainsRune(" \t,[]{}", rune(d[end])) && t.breakLen(end) == 0 {
			end++
		}
		return start, end, nil
	case v.Kind != yaml.ScalarNode:
		if v.Style&yaml.FlowStyle != 0 {
			return 0, 0, uneditable(v.Line, "the value is in flow style")
		}
		return 0, 0, uneditable(v.Line, "the value is not a single value")
	case v.Style&yaml.TaggedStyle != 0:
		return 0, 0, uneditable(v.Line, "the value has an explicit tag (!!…)")
	case v.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		return 0, 0, uneditable(v.Line, "the value spans several lines (a block scalar)")
	case v.Style&yaml.DoubleQuotedStyle != 0:
		return t.quotedSpan(v, start, '"')
	case v.Style&yaml.SingleQuotedStyle != 0:
		return t.quotedSpan(v, start, '\'')
	}
	// Plain.
	if v.Value == "" {
		if start == 0 || d[start-1] != ':' || !t.blankOrComment(start) {
			return 0, 0, uneditable(v.Line, "cannot locate an empty value")
		}
		return start, start, nil
	}
	if start < len(d) && strings.ContainsRune("\"'|>!&*{[#", rune(d[start])) {
		return 0, 0, uneditable(v.Line, "cannot locate a value")
	}
	le := t.lineEnd(start)
	end = le
	for i := start + 1; i < le; i++ {
		if d[i] == '#' && (d[i-1] == ' ' || d[i-1] == '\t') {
			end = i
			break
		}
	}
	for end > start && (d[end-1] == ' ' || d[end-1] == '\t') {
		end--
	}
	return start, end, nil
}

// quotedSpan is the byte span of the value v, quoted with q (" or ') from start to the closing
// quote on the same line. Inside double quotes a backslash escapes the next byte; inside single
// quotes a doubled quote stands for one.
func (t *blText) quotedSpan(v *yaml.Node, start int, q byte) (int, int, error) {
	d := t.data
	if start >= len(d) || d[start] != q {
		return 0, 0, uneditable(v.Line, "cannot locate a quoted value")
	}
	for i := start + 1; i < len(d); i++ {
		switch {
		case t.breakLen(i) > 0:
			return 0, 0, uneditable(v.Line, "the value spans several lines")
		case q == '"' && d[i] == '\\', q == '\'' && d[i] == '\'' && i+1 < len(d) && d[i+1] == '\'':
			i++
		case d[i] == q:
			return start, i + 1, nil
		}
	}
	return 0, 0, uneditable(v.Line, "unterminated quoted value")
}

// entryEnd is where the line after a key's single-line value starts.
func (t *blText) entryEnd(v *yaml.Node) (int, error) {
	_, end, err := t.valueSpan(v)
	if err != nil {
		return 0, err
	}
	return t.nextLineStart(t.lineOf(end)), nil
}

// editBLConfig computes the surgical edit of data (whose config is old) that gives workspace the
// credentials next, and checks that the result reads as intended.
func editBLConfig(data []byte, old *Config, oldTorn bool, workspace string, next Credentials) ([]byte, error) {
	var doc yaml.Node
	if err := unmarshalYAML(data, &doc); err != nil {
		return nil, err
	}
	t := newBLText(data)
	if len(doc.Content) == 0 {
		// Comments only: keep them, and write the config after them.
		out := bytes.Clone(data)
		if t.lineStarts[len(t.lineStarts)-1] != len(data) {
			out = append(out, t.eol...) // the comments' last line had no line break
		}
		c := &Config{Workspaces: []Workspace{{Name: workspace, Credentials: next}}}
		out = append(out, strings.ReplaceAll(string(c.Marshal()), "\n", t.eol)...)
		if got, err := Parse(out); err != nil || !reflect.DeepEqual(got, c) {
			return nil, uneditable(0, "the result would not read back as intended")
		}
		return out, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, uneditable(root.Line, "the top level is an alias or not a mapping")
	}
	if root.Style&yaml.FlowStyle != 0 {
		return nil, uneditable(root.Line, "the file is in flow style ({…})")
	}
	var wsKey, wsVal, trackingKey *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch root.Content[i].Value {
		case "workspaces":
			wsKey, wsVal = root.Content[i], root.Content[i+1]
		case "tracking":
			trackingKey = root.Content[i]
		}
	}
	idx := -1
	if wsVal != nil && wsVal.Kind == yaml.SequenceNode {
		for i, it := range wsVal.Content {
			item := sources.YAMLAlias(it)
			if item.Kind != yaml.MappingNode {
				continue
			}
			f, err := mappingFields(item)
			if err != nil {
				return nil, err
			}
			if name, _ := stringField(f, "name"); name == workspace {
				if it.Kind == yaml.AliasNode {
					return nil, uneditable(it.Line, "the workspace's entry is an alias (*) of another node")
				}
				idx = i
				break
			}
		}
	}

	var edits []blEdit
	var err error
	if idx >= 0 {
		edits, err = t.editWorkspace(wsVal.Content[idx], old.Workspaces[idx].Credentials, next)
	} else {
		edits, err = t.appendWorkspace(root, wsKey, wsVal, trackingKey, workspace, next)
	}
	if err != nil {
		return nil, err
	}
	out, err := t.apply(edits)
	if err != nil {
		return nil, err
	}
	allowTorn := oldTorn || trackingKey == nil
	if err := verifyBLEdit(data, out, old, allowTorn, idx, workspace, next, t.set); err != nil {
		return nil, err
	}
	return out, nil
}

// editWorkspace edits the credentials of one existing workspace entry.
func (t *blText) editWorkspace(item *yaml.Node, cur, next Credentials) ([]blEdit, error) {
	changed := changedFields(cur, next)
	if len(changed) == 0 {
		return nil, nil
	}
	if item.Style&yaml.FlowStyle != 0 {
		return nil, uneditable(item.Line, "the workspace's entry is in flow style ({…})")
	}
	var credKey, credVal, nameVal, idVal *yaml.Node
	for i := 0; i+1 < len(item.Content); i += 2 {
		switch item.Content[i].Value {
		case "credentials":
			credKey, credVal = item.Content[i], item.Content[i+1]
		case "name":
			nameVal = item.Content[i+1]
		case "id":
			idVal = item.Content[i+1]
		}
	}
	switch {
	case credKey == nil:
		// A hand-written entry without credentials: add them after the name (and id), as bl orders them.
		after := nameVal
		if idVal != nil && idVal.Line >= nameVal.Line {
			after = idVal
		}
		at, err := t.entryEnd(after)
		if err != nil {
			return nil, err
		}
		indent := strings.Repeat(" ", item.Content[0].Column-1)
		if lines := t.fieldLines(indent+"  ", changed, next); lines != "" {
			return []blEdit{{at, at, indent + "credentials:" + t.eol + lines}}, nil
		}
		return nil, nil
	case credVal.Kind == yaml.AliasNode:
		return nil, uneditable(credVal.Line, "credentials is an alias (*) of another node")
	case sources.YAMLNull(credVal) || credVal.Kind == yaml.MappingNode && credVal.Style&yaml.FlowStyle != 0 && len(credVal.Content) == 0:
		// No fields yet (credentials:, credentials: ~, credentials: {}): the fields go on the next lines.
		edits, at, err := t.clearEmpty(credKey, credVal)
		if err != nil {
			return nil, err
		}
		if lines := t.fieldLines(strings.Repeat(" ", credKey.Column-1+2), changed, next); lines != "" {
			return append(edits, blEdit{at, at, lines}), nil
		}
		return nil, nil
	case credVal.Kind != yaml.MappingNode:
		return nil, uneditable(credVal.Line, "credentials is not a mapping")
	case credVal.Style&yaml.FlowStyle != 0:
		return nil, uneditable(credVal.Line, "credentials is in flow style ({…})")
	}
	return t.editBlock(credVal, changed, next)
}

// changedFields are the indexes in blCredFields of the fields that differ between cur and next.
func changedFields(cur, next Credentials) []int {
	var changed []int
	for i, f := range blCredFields {
		if f.get(cur) != f.get(next) {
			changed = append(changed, i)
		}
	}
	return changed
}

// fieldLines are the fields of changed (indexes in blCredFields) that next does not leave empty,
// as lines at indent: the fields an entry that lacks them gets.
func (t *blText) fieldLines(indent string, changed []int, next Credentials) string {
	var b strings.Builder
	for _, i := range changed {
		if v := blCredFields[i].get(next); v != "" {
			b.WriteString(t.fieldLine(indent, blCredFields[i], v))
		}
	}
	return b.String()
}

// editBlock replaces, in a block mapping, the values of the keys present, and inserts the
// fields missing where bl's order puts them.
func (t *blText) editBlock(credVal *yaml.Node, changed []int, next Credentials) ([]blEdit, error) {
	pairs := credVal.Content
	if len(pairs) == 0 {
		return nil, uneditable(credVal.Line, "credentials is empty")
	}
	firstLine, err := t.keyLineStart(pairs[0])
	if err != nil {
		return nil, err
	}
	first, _ := t.offset(pairs[0].Line, pairs[0].Column)
	indent := string(t.data[firstLine:first])
	var edits []blEdit
	for _, fi := range changed {
		f := blCredFields[fi]
		v := f.get(next)
		present := false
		for i := 0; i+1 < len(pairs); i += 2 {
			if k := pairs[i]; k.Kind == yaml.ScalarNode && blFieldIndex(k.Value) == fi {
				// The value is replaced, the key keeps its spelling.
				start, end, err := t.valueSpan(pairs[i+1])
				if err != nil {
					return nil, err
				}
				text := f.text(v)
				if start == end {
					text = " " + text // key: (nothing) → key: value
				}
				edits = append(edits, blEdit{start, end, text})
				t.set[k.Value] = f.generic(v)
				present = true
			}
		}
		if present || v == "" {
			continue
		}
		at, err := t.insertionPoint(pairs, fi)
		if err != nil {
			return nil, err
		}
		edits = append(edits, blEdit{at, at, t.fieldLine(indent, f, v)})
	}
	return edits, nil
}

// clearEmpty makes room for lines under key whose value is empty (key:, key: ~, key: {} or
// key: []): it drops a value written on the key's line, with the blanks before it, and returns
// where the new lines go, the start of the next line, when nothing but blanks and a comment
// follows.
func (t *blText) clearEmpty(key, v *yaml.Node) ([]blEdit, int, error) {
	start, ok := t.offset(v.Line, v.Column)
	if !ok {
		return nil, 0, uneditable(v.Line, "cannot locate a value")
	}
	if sources.YAMLNull(v) && v.Value == "" {
		if !t.blankOrComment(start) {
			return nil, 0, uneditable(key.Line, "text follows a key")
		}
		return nil, t.nextLineStart(t.lineOf(start)), nil
	}
	var open, close byte
	switch v.Kind {
	case yaml.MappingNode:
		open, close = '{', '}'
	case yaml.SequenceNode:
		open, close = '[', ']'
	}
	end := start
	if open != 0 {
		if start >= len(t.data) || t.data[start] != open {
			return nil, 0, uneditable(v.Line, "cannot locate a value")
		}
		end = start + 1
		for end < len(t.data) && (t.data[end] == ' ' || t.data[end] == '\t') {
			end++
		}
		if end >= len(t.data) || t.data[end] != close {
			return nil, 0, uneditable(v.Line, "the value is in flow style")
		}
		end++
	} else if _, e, err := t.valueSpan(v); err != nil {
		return nil, 0, err
	} else {
		end = e
	}
	if !t.blankOrComment(end) {
		return nil, 0, uneditable(v.Line, "text follows a value")
	}
	for start > 0 && (t.data[start-1] == ' ' || t.data[start-1] == '\t') {
		start--
	}
	if start == 0 || t.data[start-1] != ':' {
		return nil, 0, uneditable(v.Line, "cannot locate a value")
	}
	return []blEdit{{start, end, ""}}, t.nextLineStart(t.lineOf(end)), nil
}

// insertionPoint is where field fi goes in a block mapping that lacks it: after the field before it in
// bl's order, else before the field after it, else before the mapping's first key.
func (t *blText) insertionPoint(pairs []*yaml.Node, fi int) (int, error) {
	var pred, succ *yaml.Node // pred: a value; succ: a key
	predIdx, succIdx := -1, len(blCredFields)
	for i := 0; i+1 < len(pairs); i += 2 {
		k := pairs[i]
		if k.Kind != yaml.ScalarNode {
			continue
		}
		switch j := blFieldIndex(k.Value); {
		case j < 0:
		case j < fi && j > predIdx:
			pred, predIdx = pairs[i+1], j
		case j > fi && j < succIdx:
			succ, succIdx = k, j
		}
	}
	if pred != nil {
		if at, err := t.entryEnd(pred); err == nil {
			return at, nil
		}
	}
	if succ != nil {
		return t.keyLineStart(succ)
	}
	return t.keyLineStart(pairs[0])
}

// appendWorkspace adds a workspace entry, in bl's format, at the end of the workspaces list.
func (t *blText) appendWorkspace(root, wsKey, wsVal, trackingKey *yaml.Node, name string, next Credentials) ([]blEdit, error) {
	entry := func(dash string) string {
		var b strings.Builder
		b.WriteString(dash + "- name: " + plainYAML(name) + t.eol)
		b.WriteString(dash + "  credentials:" + t.eol)
		b.WriteString(t.fieldLines(dash+"    ", changedFields(Credentials{}, next), next))
		return b.String()
	}
	switch {
	case wsKey == nil:
		// A hand-written file without a workspaces key: add one, before tracking: or at the end.
		indent := strings.Repeat(" ", root.Content[0].Column-1)
		at := len(t.data)
		if trackingKey != nil {
			var err error
			if at, err = t.keyLineStart(trackingKey); err != nil {
				return nil, err
			}
		}
		return []blEdit{{at, at, indent + "workspaces:" + t.eol + entry(indent)}}, nil
	case sources.YAMLNull(wsVal) || wsVal.Kind == yaml.SequenceNode && wsVal.Style&yaml.FlowStyle != 0 && len(wsVal.Content) == 0:
		// workspaces:, workspaces: ~ or workspaces: [] (yaml.v2): the entry goes on the next line.
		edits, at, err := t.clearEmpty(wsKey, wsVal)
		if err != nil {
			return nil, err
		}
		return append(edits, blEdit{at, at, entry(strings.Repeat(" ", wsKey.Column-1))}), nil
	case wsVal.Kind != yaml.SequenceNode:
		return nil, uneditable(wsVal.Line, "workspaces is not a list")
	case wsVal.Style&yaml.FlowStyle != 0:
		return nil, uneditable(wsVal.Line, "workspaces is in flow style ([…])")
	}
	// A block list: the entry goes after its last item, with the dash where the others have theirs.
	dashIndent, err := t.dashIndent(wsVal.Content[0])
	if err != nil {
		return nil, err
	}
	at, err := t.listEnd(root, wsKey)
	if err != nil {
		return nil, err
	}
	return []blEdit{{at, at, entry(dashIndent)}}, nil
}

// dashIndent is what precedes the dash of the list item whose value is first: the indentation
// a new item needs. An item that does not start its line cannot be matched.
func (t *blText) dashIndent(first *yaml.Node) (string, error) {
	off, ok := t.offset(first.Line, first.Column)
	if !ok {
		return "", uneditable(first.Line, "cannot locate a workspaces entry")
	}
	dash := off - 1
	for dash >= 0 && strings.IndexByte(" \t\r\n", t.data[dash]) >= 0 {
		dash--
	}
	if dash < 0 || t.data[dash] != '-' {
		return "", uneditable(first.Line, "cannot locate the dash of a workspaces entry")
	}
	dashLine := t.lineOf(dash)
	indent := string(t.data[t.lineStarts[dashLine-1]:dash])
	if strings.Trim(indent, " ") != "" {
		return "", uneditable(dashLine, "a workspaces entry does not start its line")
	}
	return indent, nil
}

// listEnd is where the list under wsKey ends: where the next top-level key starts (or at the end
// of the file), less the blank and comment lines right before it.
func (t *blText) listEnd(root, wsKey *yaml.Node) (int, error) {
	at, limit := len(t.data), 0
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i] == wsKey && i+2 < len(root.Content) {
			k := root.Content[i+2]
			var err error
			if at, err = t.keyLineStart(k); err != nil {
				return 0, err
			}
			limit = k.Column - 1
		}
	}
	for line := t.lineOf(at) - 1; line >= 1 && line > wsKey.Line; line-- {
		ls := t.lineStarts[line-1]
		if at == len(t.data) && ls == len(t.data) {
			continue // the empty "line" after a final line break
		}
		text := string(t.data[ls:t.lineEnd(ls)])
		trimmed := strings.TrimLeft(text, " ")
		if trimmed != "" && !(trimmed[0] == '#' && len(text)-len(trimmed) <= limit) {
			break
		}
		if ls < at {
			at = ls
		}
	}
	return at, nil
}

// apply makes the edits (non-overlapping; insertions at one offset keep their order). An insertion at
// the end of a file that does not end with a line break starts with one.
func (t *blText) apply(edits []blEdit) ([]byte, error) {
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].start < edits[j].start })
	var b bytes.Buffer
	pos := 0
	for _, e := range edits {
		if e.start < pos || e.end < e.start || e.end > len(t.data) {
			return nil, uneditable(0, "overlapping edits")
		}
		b.Write(t.data[pos:e.start])
		text := e.text
		if e.start == len(t.data) && e.start == e.end && len(t.data) > 0 && t.lineStarts[len(t.lineStarts)-1] != len(t.data) {
			text = t.eol + text
		}
		b.WriteString(text)
		pos = e.end
	}
	b.Write(t.data[pos:])
	return b.Bytes(), nil
}

// verifyBLEdit checks that out reads as data with exactly the intended change: through ParseBLConfig
// (every other workspace, the context and tracking the same; the workspace holding next) and through
// a generic YAML decode (every other value in the file the same, unknown keys included).
// idx is the workspace edited, -1 when one was appended; set is how a generic decode reads the
// credentials keys the edit wrote.
func verifyBLEdit(data, out []byte, old *Config, allowTorn bool, idx int, workspace string, next Credentials, set map[string]any) error {
	fail := func(what string) error {
		return uneditable(0, "the edited file would not read back as intended (%s)", what)
	}
	got, err := Parse(out)
	if err != nil && !(allowTorn && errors.Is(err, ErrMaybeTorn)) {
		return fail("it does not parse")
	}
	want := &Config{Context: old.Context, Tracking: old.Tracking, Workspaces: append([]Workspace(nil), old.Workspaces...)}
	if idx >= 0 {
		want.Workspaces[idx].Credentials = next
	} else {
		want.Workspaces = append(want.Workspaces, Workspace{Name: workspace, Credentials: next})
	}
	if !reflect.DeepEqual(got, want) {
		return fail("the config differs")
	}

	var before, after any
	if unmarshalYAML(data, &before) != nil || unmarshalYAML(out, &after) != nil {
		return fail("it does not decode")
	}
	list, _ := mapGet(before, "workspaces").([]any)
	if idx >= 0 {
		if idx >= len(list) {
			return fail("the workspaces differ")
		}
		item := list[idx]
		creds := mapGet(item, "credentials")
		for k, v := range set {
			creds = mapSet(creds, k, v) // a nil creds becomes a map
		}
		list[idx] = mapSet(item, "credentials", creds)
	} else {
		entry := map[string]any{"name": workspace, "credentials": nil}
		if len(set) > 0 {
			entry["credentials"] = set
		}
		before = mapSet(before, "workspaces", append(list, entry))
	}
	if !reflect.DeepEqual(before, after) {
		return fail("other content differs")
	}
	return nil
}

// mapGet and mapSet read and write a key of a decoded mapping, whichever map type it decoded to.
func mapGet(m any, k string) any {
	switch m := m.(type) {
	case map[string]any:
		return m[k]
	case map[any]any:
		return m[k]
	}
	return nil
}

func mapSet(m any, k string, v any) any {
	switch m := m.(type) {
	case map[string]any:
		m[k] = v
		return m
	case map[any]any:
		m[k] = v
		return m
	}
	return map[string]any{k: v}
}

// writeFileAtomic replaces path with data: a temporary file in the same directory, mode 0600, synced,
// renamed over path, then the directory synced so that the rename survives a crash.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	removeStaleTemps(dir, "."+filepath.Base(path)+".tmp-")
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // created 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeStaleTemps deletes temporary files a killed writer left behind (they hold a session, so
// they must not pile up). Writes are serialised within the process, so an old temporary file is
// nobody's; a minute of age also spares another process's write in progress.
func removeStaleTemps(dir, prefix string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Minute {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
