package blconfig

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// Config is the bl CLI config file, $HOME/.blaxel/config.yaml. The zero value is an empty config.
// A Config is a plain value: it is not safe for concurrent mutation.
type Config struct {
	Context    Context
	Workspaces []Workspace // nil when there are none
	Tracking   bool
}

// Equal reports whether c and o hold the same context, workspaces (in order) and tracking.
func (c *Config) Equal(o *Config) bool {
	return c.Context == o.Context && c.Tracking == o.Tracking && slices.Equal(c.Workspaces, o.Workspaces)
}

// Context is the config's current context.
type Context struct {
	Workspace string // the current workspace; "" if none
}

// Workspace is one entry of the config's workspaces list.
type Workspace struct {
	Name        string // never empty in a parsed config
	ID          string
	Credentials Credentials
	Env         string // "prod", "dev", "local" or ""
}

// UnknownKey is a key of a workspace's credentials that no Blaxel tool reads, and the key it
// is probably a misspelling of. It never holds the value.
type UnknownKey struct {
	Key  string // as written
	Line int    // 1-based
	// Want is the key bl (or Blaxel's SDKs) would read in its place, "" when none is close.
	Want string
}

// String says what is wrong and how bl spells it, without the value.
func (u UnknownKey) String() string {
	s := fmt.Sprintf("credentials key %s: (line %d) is read by neither bl nor blauth", ipc.Clip(u.Key, 64), u.Line)
	switch u.Want {
	case "":
		return s + "; the keys bl reads are " + strings.Join(blCredentialKeys, ", ")
	case "client_credentials":
		return s + "; bl reads client_credentials: (Blaxel's Python and TypeScript SDKs read clientCredentials:)"
	}
	return s + "; bl reads " + u.Want + ":"
}

// blCredentialKeys are the keys of a workspace's credentials that bl or Blaxel's SDKs read, as
// listed in docs/SOURCES-FORMATS.md.
var blCredentialKeys = []string{"apiKey", "access_token", "refresh_token", "expires_in", "device_code", "client_credentials", "clientCredentials"}

// blCredentialKeyFor returns the known key that key is probably a misspelling of: the same once
// case, "_" and "-" are ignored (api_key, ApiKey, refreshToken), else the nearest by edit
// distance; "" when none is close.
func blCredentialKeyFor(key string) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	normed := make([]string, 6) // bl's own spellings
	for i, k := range blCredentialKeys[:6] {
		if normed[i] = norm(k); normed[i] == norm(key) {
			return k
		}
	}
	if near := ipc.Nearest(norm(key), normed); len(near) > 0 {
		return blCredentialKeys[slices.Index(normed, near[0])]
	}
	return ""
}

// Credentials are a workspace's credentials, as bl stores them.
type Credentials struct {
	APIKey            string // apiKey
	AccessToken       string // access_token
	RefreshToken      string // refresh_token
	ExpiresIn         int    // expires_in, in seconds; 0 if unknown
	DeviceCode        string // device_code
	ClientCredentials string // client_credentials (or clientCredentials, as the Python and TypeScript SDKs name it)
}

// ErrEmpty reports a config file that holds nothing but white space. No Blaxel tool writes such a
// file, but bl truncates the file before it writes it, so a reader that comes at the wrong moment sees
// one: callers that hold a previous view should keep it and read again. ParseBLConfig returns an empty
// config alongside this error for callers that have no previous view.
var ErrEmpty = errors.New("bl config file is empty (bl may be writing it)")

// ErrMaybeTorn is matched (through a *BLConfigError with Torn set) by the error for a file
// that is valid YAML and reads as a config, but lacks something every bl writer writes (the final
// newline, the workspaces key, a workspace's credentials key, the closing tracking line): bl may
// be in the middle of rewriting it, or a person wrote it by hand. ParseBLConfig returns the config
// it read alongside this error. A caller reads the file again a moment later and believes it when
// it has not changed (bl's truncate and write are microseconds apart); a file that changed is a
// write in progress.
var ErrMaybeTorn = errors.New("the bl config may be cut short by a concurrent write")

// Error reports why a bl config file was rejected as invalid or cut short. It never quotes the
// file's content, which holds secrets.
type Error struct {
	Line   int    // 1-based line the problem was found on; 0 when not tied to a line
	Reason string // generic reason
	// Torn is set when the file is valid but looks cut short: the error then matches
	// ErrBLConfigMaybeTorn and the config that was read comes with it.
	Torn bool
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
	}
	return e.Reason
}

// Unwrap gives ErrBLConfigMaybeTorn for a file that may be cut short.
func (e *Error) Unwrap() error {
	if e.Torn {
		return ErrMaybeTorn
	}
	return nil
}

// Parse parses a bl CLI config file, in the current sdk-go writer's format or the older yaml.v2
// writer's. Unknown keys are ignored (BLUnknownKeys lists those of the workspaces' credentials,
// which are probably misspelt). It is strict where lenience would be dangerous: a file that is not
// valid YAML or whose top level is not a mapping is an error of type *BLConfigError and a nil config,
// never an empty config, so that callers keep their last good view and never write a broken file back.
// A valid file that looks cut short by a concurrent write gives the config it holds and a
// *BLConfigError matching ErrBLConfigMaybeTorn: the caller decides, by reading again, whether it is
// a write in progress or a file written by hand. A file of white space gives an empty config and
// ErrBLConfigEmpty. The rules are listed in docs/SOURCES-FORMATS.md.
func Parse(data []byte) (*Config, error) {
	if len(bytes.Trim(data, " \t\r\n")) == 0 {
		return &Config{}, ErrEmpty
	}
	// torn is the first sign of a cut: the file is still read, and the sign reported at the end.
	var torn *Error
	cut := func(line int, reason string) {
		if torn == nil {
			torn = &Error{Line: line, Reason: reason, Torn: true}
		}
	}
	if data[len(data)-1] != '\n' {
		cut(bytes.Count(data, []byte("\n"))+1, "the file does not end with a newline: it is probably cut short by a concurrent write")
	}
	var doc yaml.Node
	if err := unmarshalYAML(data, &doc); err != nil {
		if torn != nil {
			torn.Torn = false // invalid as it stands: refused, whether cut or not
			torn.Reason = "invalid YAML, and " + torn.Reason
			return nil, torn
		}
		return nil, err
	}
	if len(doc.Content) == 0 {
		return &Config{}, nil // comments only: someone wrote it by hand, no writer cuts a file to that
	}
	root := sources.YAMLAlias(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil, &Error{Line: root.Line, Reason: "the top level is not a mapping"}
	}
	top, err := mappingFields(root)
	if err != nil {
		return nil, err
	}

	var c Config
	if n := top["context"]; n != nil && !sources.YAMLNull(n) {
		if n.Kind != yaml.MappingNode {
			return nil, &Error{Line: n.Line, Reason: "context is not a mapping"}
		}
		f, err := mappingFields(n)
		if err != nil {
			return nil, err
		}
		if c.Context.Workspace, err = stringField(f, "workspace"); err != nil {
			return nil, err
		}
	}

	trackingNode, hasTracking := top["tracking"]
	if hasTracking && !sources.YAMLNull(trackingNode) {
		if trackingNode.Kind != yaml.ScalarNode || trackingNode.Decode(&c.Tracking) != nil {
			return nil, &Error{Line: trackingNode.Line, Reason: "tracking is not a boolean"}
		}
	}

	wsNode, hasWorkspaces := top["workspaces"]
	switch {
	case !hasWorkspaces:
		cut(root.Line, "there is no workspaces key, which every bl writer writes: the file is probably cut short "+
			"by a concurrent write")
	case sources.YAMLNull(wsNode):
		if !hasTracking {
			cut(wsNode.Line, "workspaces is empty and tracking is missing: the file is probably cut short by a "+
				"concurrent write")
		}
	case wsNode.Kind == yaml.SequenceNode:
		var lastCredKeys map[string]*yaml.Node
		for _, item := range wsNode.Content {
			ws, credKeys, noCreds, err := parseBLWorkspace(sources.YAMLAlias(item))
			if err != nil {
				return nil, err
			}
			if noCreds {
				// Both writers write "credentials:" right after the name (and id): an entry without it was cut.
				cut(item.Line, "a workspaces entry has no credentials key: the file is probably cut short by a "+
					"concurrent write")
			}
			c.Workspaces = append(c.Workspaces, ws)
			lastCredKeys = credKeys
		}
		// The current writer always ends the file with tracking; only the yaml.v2 writer leaves it out,
		// and it writes every credential key it knew (the first five), empty or not. A file without tracking whose last entry lacks one was cut.
		if n := len(wsNode.Content); n > 0 && !hasTracking && !hasAll(lastCredKeys, blCredentialKeys[:5]) {
			cut(wsNode.Content[n-1].Line, "the last workspace is incomplete and tracking is missing: the file is "+
				"probably cut short by a concurrent write (if you wrote it by hand, end it with \"tracking: false\" as bl does)")
		}
	default:
		return nil, &Error{Line: wsNode.Line, Reason: "workspaces is not a list"}
	}
	if torn != nil {
		return &c, torn
	}
	return &c, nil
}

// parseBLWorkspace parses one workspaces entry. It also returns the keys its credentials mapping has,
// and whether it has no credentials key at all.
func parseBLWorkspace(n *yaml.Node) (ws Workspace, credKeys map[string]*yaml.Node, noCreds bool, err error) {
	if n.Kind != yaml.MappingNode {
		return ws, nil, false, &Error{Line: n.Line, Reason: "a workspaces entry is not a mapping"}
	}
	f, err := mappingFields(n)
	if err != nil {
		return ws, nil, false, err
	}
	if ws.Name, err = stringField(f, "name"); err != nil {
		return ws, nil, false, err
	}
	if ws.Name == "" {
		return ws, nil, false, &Error{Line: n.Line, Reason: "a workspaces entry has no name"}
	}
	if ws.ID, err = stringField(f, "id"); err != nil {
		return ws, nil, false, err
	}
	if ws.Env, err = stringField(f, "env"); err != nil {
		return ws, nil, false, err
	}
	credNode, ok := f["credentials"]
	if !ok {
		return ws, nil, true, nil
	}
	if sources.YAMLNull(credNode) {
		return ws, nil, false, nil
	}
	if credNode.Kind != yaml.MappingNode {
		return ws, nil, false, &Error{Line: credNode.Line, Reason: "credentials is not a mapping"}
	}
	cf, err := mappingFields(credNode)
	if err != nil {
		return ws, nil, false, err
	}
	cr := &ws.Credentials
	for _, s := range []struct {
		key string
		dst *string
	}{
		{"apiKey", &cr.APIKey},
		{"access_token", &cr.AccessToken},
		{"refresh_token", &cr.RefreshToken},
		{"device_code", &cr.DeviceCode},
		{"client_credentials", &cr.ClientCredentials},
	} {
		if *s.dst, err = stringField(cf, s.key); err != nil {
			return ws, nil, false, err
		}
	}
	camel, err := stringField(cf, "clientCredentials")
	if err != nil {
		return ws, nil, false, err
	}
	cr.ClientCredentials = cmp.Or(cr.ClientCredentials, camel)
	if n := cf["expires_in"]; n != nil && !sources.YAMLNull(n) {
		if n.Kind != yaml.ScalarNode || n.Decode(&cr.ExpiresIn) != nil {
			return ws, nil, false, &Error{Line: n.Line, Reason: "expires_in is not an integer"}
		}
		// The writer leaves out expires_in unless it is positive; a negative one means nothing.
		cr.ExpiresIn = max(cr.ExpiresIn, 0)
	}
	return ws, cf, false, nil
}

// UnknownKeys lists, by workspace name, the keys of the workspaces' credentials in a bl
// config file that no Blaxel tool reads (a misspelt apiKey, say), in the file's order; nil when
// there are none or the file does not parse. It is apart from ParseBLConfig so that a config's
// value says only what bl reads.
func UnknownKeys(data []byte) map[string][]UnknownKey {
	var doc yaml.Node
	if unmarshalYAML(data, &doc) != nil || len(doc.Content) == 0 {
		return nil
	}
	root := sources.YAMLAlias(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil
	}
	top, err := mappingFields(root)
	if err != nil || top["workspaces"] == nil || top["workspaces"].Kind != yaml.SequenceNode {
		return nil
	}
	var out map[string][]UnknownKey
	for _, item := range top["workspaces"].Content {
		item = sources.YAMLAlias(item)
		if item.Kind != yaml.MappingNode {
			continue
		}
		f, err := mappingFields(item)
		if err != nil {
			continue
		}
		name, _ := stringField(f, "name")
		cred := f["credentials"]
		if name == "" || cred == nil || cred.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(cred.Content); i += 2 {
			k := cred.Content[i]
			if k.Kind != yaml.ScalarNode || slices.Contains(blCredentialKeys, k.Value) {
				continue
			}
			if out == nil {
				out = map[string][]UnknownKey{}
			}
			out[name] = append(out[name], UnknownKey{Key: k.Value, Line: k.Line, Want: blCredentialKeyFor(k.Value)})
		}
	}
	return out
}

// yamlErrLine finds the line number in a yaml.v3 error message.
var yamlErrLine = regexp.MustCompile(`line (\d+)`)

// unmarshalYAML parses data into v (a node tree, or generic values), turning a panic of the
// decoder into an error. Its errors keep only a line number: yaml.v3 messages may quote the
// content (an anchor's name, a value), and the content holds secrets.
func unmarshalYAML(data []byte, v any) (err error) {
	defer func() {
		if recover() != nil {
			err = &Error{Reason: "invalid YAML"}
		}
	}()
	if err := yaml.Unmarshal(data, v); err != nil {
		e := &Error{Reason: "invalid YAML"}
		if m := yamlErrLine.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
		}
		return e
	}
	return nil
}

// mappingFields indexes a mapping's values by key, aliases resolved. A duplicate key is an error, as it
// is for yaml.v3's Unmarshal and so for bl itself.
func mappingFields(n *yaml.Node) (map[string]*yaml.Node, error) {
	f := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind != yaml.ScalarNode {
			continue // not a key any writer produces
		}
		if _, dup := f[k.Value]; dup {
			return nil, &Error{Line: k.Line, Reason: "a key is repeated"}
		}
		f[k.Value] = sources.YAMLAlias(n.Content[i+1])
	}
	return f, nil
}

// stringField returns the text of the scalar under key: "" if it is absent or null. A number or a boolean
// gives its text as written.
func stringField(f map[string]*yaml.Node, key string) (string, error) {
	n := f[key]
	if n == nil || sources.YAMLNull(n) {
		return "", nil
	}
	if n.Kind != yaml.ScalarNode {
		return "", &Error{Line: n.Line, Reason: key + " is not a string"}
	}
	return n.Value, nil
}

func hasAll(f map[string]*yaml.Node, keys []string) bool {
	for _, k := range keys {
		if _, ok := f[k]; !ok {
			return false
		}
	}
	return true
}

// Workspace returns the first workspace named name, as a pointer into c.Workspaces.
func (c *Config) Workspace(name string) (*Workspace, bool) {
	for i := range c.Workspaces {
		if c.Workspaces[i].Name == name {
			return &c.Workspaces[i], true
		}
	}
	return nil, false
}

// Marshal formats c exactly as the current bl (sdk-go's WriteConfig) does: context, workspaces, tracking;
// per workspace name, id if set, credentials (only the non-empty ones, apiKey and client_credentials
// double-quoted), env double-quoted if set. It departs from those bytes only for a value the writer
// would garble (one yaml would read back as another value or as a non-string): that value is written
// as an escaped YAML double-quoted string. Invalid UTF-8 cannot be written in YAML and becomes U+FFFD.
func (c *Config) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString("context:\n")
	fmt.Fprintf(&b, "  workspace: %s\n", plainYAML(c.Context.Workspace))
	b.WriteString("workspaces:\n")
	for _, ws := range c.Workspaces {
		fmt.Fprintf(&b, "- name: %s\n", plainYAML(ws.Name))
		if ws.ID != "" {
			fmt.Fprintf(&b, "  id: %s\n", plainYAML(ws.ID))
		}
		b.WriteString("  credentials:\n")
		for _, f := range blCredFields {
			if v := f.get(ws.Credentials); v != "" {
				fmt.Fprintf(&b, "    %s: %s\n", f.keys[0], f.text(v))
			}
		}
		if ws.Env != "" {
			fmt.Fprintf(&b, "  env: %s\n", quotedYAML(ws.Env))
		}
	}
	fmt.Fprintf(&b, "tracking: %t\n", c.Tracking)
	return b.Bytes()
}

// plainYAML returns s as the writer writes it (%s) when yaml reads that back as the string s.
func plainYAML(s string) string {
	if s == "" || readsBackAs(s, s) {
		return s
	}
	return escapeYAML(s)
}

// quotedYAML returns s as the writer writes it ("%s") when yaml reads that back as the string s.
func quotedYAML(s string) string {
	if q := `"` + s + `"`; readsBackAs(q, s) {
		return q
	}
	return escapeYAML(s)
}

// readsBackAs reports whether the scalar text, written after "key: ", parses as the string s.
func readsBackAs(text, s string) bool {
	if strings.ContainsAny(text, "\r\n\u0085\u2028\u2029") {
		return false // stay on one line: no way for a value to run into the next key
	}
	var doc yaml.Node
	if unmarshalYAML([]byte("k: "+text+"\n"), &doc) != nil || len(doc.Content) != 1 {
		return false
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode || len(m.Content) != 2 {
		return false
	}
	v := m.Content[1]
	return v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" && v.Value == s
}

// escapeYAML writes s as a YAML double-quoted scalar, escaping everything that is not printable.
func escapeYAML(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s { // invalid UTF-8 comes out as U+FFFD
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == 0:
			b.WriteString(`\0`)
		case r < 0x20, 0x7f <= r && r <= 0x9f:
			fmt.Fprintf(&b, `\x%02X`, r)
		case r == 0x2028, r == 0x2029, r == 0xFEFF, r == 0xFFFE, r == 0xFFFF:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Read reads and parses the bl CLI config at path. A missing file gives an empty config and an
// error that wraps fs.ErrNotExist; an empty file gives an empty config and an error that wraps
// ErrBLConfigEmpty; a file that may be cut short gives its config and an error matching
// ErrBLConfigMaybeTorn; an invalid file gives a nil config and an error that wraps a *BLConfigError. A
// FIFO, a device or a file over sources.MaxBLConfigBytes is refused (sources.ErrFileRefused) without being read.
func Read(path string) (*Config, error) {
	data, _, err := sources.ReadBounded(path, sources.MaxBLConfigBytes)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &Config{}, fmt.Errorf("read bl config: %w", err)
		}
		return nil, fmt.Errorf("read bl config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return c, fmt.Errorf("read bl config %s: %w", path, err)
	}
	return c, nil
}
