package sources

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/blauth/blauth/ipc"
	"go.yaml.in/yaml/v3"
)

// MaxBlauthConfigBytes caps blauth's own config file: a real one is a few lines.
const MaxBlauthConfigBytes = 64 << 10

// BlauthConfig is blauth's own config file, $XDG_CONFIG_HOME/blauth/config.yaml: the settings a
// daemon reads however it was started (by hand, by the helper, by socket activation), where a
// command-line flag cannot reach. The zero value is an empty file: every setting at its default.
// docs/CONFIG.md describes every key.
type BlauthConfig struct {
	// Path is the file read, "" when there was none.
	Path string
	// Keyring is the keyring: key, nil when the file does not set it. false turns the OS
	// keyring off.
	Keyring *bool
	// Routes bind directories to workspaces, in the file's order (MatchRoute picks one).
	Routes []Route
	// NotifyCommand is run (with /bin/sh -c) when a credential can no longer be refreshed;
	// "" runs nothing.
	NotifyCommand string
	// RunDomains are the domains of sandbox and preview hosts that blauth-proxy may send a
	// token to besides Blaxel's own, in lower case (ipc.ParseRunDomains).
	RunDomains []string
}

// blauthConfigKey is one key of the file: its name, what it does (for errors and docs), and how
// its value is read into a BlauthConfig. A new setting is one more entry in blauthConfigKeys.
type blauthConfigKey struct {
	name  string
	usage string
	set   func(c *BlauthConfig, v *yaml.Node) (line int, err error) // line 0: v's own
}

// blauthConfigKeys are the keys the file may hold, in the order docs/CONFIG.md lists them.
var blauthConfigKeys = []blauthConfigKey{
	{"keyring", "true or false: whether blauthd uses the OS keyring (default true, when a session bus is there)",
		func(c *BlauthConfig, v *yaml.Node) (int, error) {
			var b bool
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
				return 0, errors.New("keyring must be true or false")
			}
			c.Keyring = &b
			return 0, nil
		}},
	{"routes", "a list of {dir: PATTERN, workspace: NAME}: the workspace of a caller in a directory the pattern matches, when nothing closer names one",
		func(c *BlauthConfig, v *yaml.Node) (int, error) {
			home, _ := os.UserHomeDir()
			var (
				line int
				err  error
			)
			c.Routes, line, err = parseRoutes(v, home)
			return line, err
		}},
	{"notify_command", "a shell command blauthd runs when a credential can no longer be refreshed, with BLAUTH_WORKSPACE, BLAUTH_REASON and BLAUTH_EXPIRES set",
		func(c *BlauthConfig, v *yaml.Node) (int, error) {
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" || strings.TrimSpace(v.Value) == "" || strings.ContainsAny(v.Value, "\x00") {
				return 0, errors.New("notify_command must be a command line, as a string")
			}
			c.NotifyCommand = v.Value
			return 0, nil
		}},
	{"run_domains", "a list of host names: domains of sandbox and preview hosts (a private deployment's) that blauth-helper exec --proxy may send the token to, besides bl.run",
		func(c *BlauthConfig, v *yaml.Node) (int, error) {
			if v.Kind != yaml.SequenceNode {
				return 0, errors.New("run_domains must be a list of host names")
			}
			for _, item := range v.Content {
				item = YAMLAlias(item)
				if item.Kind != yaml.ScalarNode || item.ShortTag() != "!!str" || strings.Contains(item.Value, ",") {
					return item.Line, errors.New("each of run_domains must be one host name, as a string")
				}
				d, err := ipc.ParseRunDomains(item.Value)
				if err != nil || len(d) != 1 {
					if err == nil {
						err = errors.New("an empty run domain")
					}
					return item.Line, err
				}
				c.RunDomains = append(c.RunDomains, d[0])
			}
			return 0, nil
		}},
}

// BlauthConfigKeys lists the keys blauth's config file may hold, each with what it does.
func BlauthConfigKeys() [][2]string {
	out := make([][2]string, len(blauthConfigKeys))
	for i, k := range blauthConfigKeys {
		out[i] = [2]string{k.name, k.usage}
	}
	return out
}

// DefaultBlauthConfigPath is blauth's config file under the XDG config directory (configHome,
// $XDG_CONFIG_HOME or ~/.config).
func DefaultBlauthConfigPath(configHome string) string {
	return filepath.Join(configHome, "blauth", "config.yaml")
}

// ErrBlauthConfig is matched by every error of ReadBlauthConfig for a file that exists but cannot
// be used: the daemon refuses to start on it rather than run with half its settings.
var ErrBlauthConfig = errors.New("invalid blauth config file")

// ReadBlauthConfig reads blauth's config file at path. A missing file is no error when
// missingOK is set (the default path: most users have none) and gives an empty config. Otherwise the error
// matches ErrBlauthConfig and names the file (and the line, where there is one): a file that is
// not YAML, a top level that is not a mapping, a key it does not know (listing the keys it
// knows), a value of the wrong type, a file that others may write (later settings run
// commands), or one that is not a regular file or is over MaxBlauthConfigBytes.
func ReadBlauthConfig(path string, missingOK bool) (*BlauthConfig, error) {
	bad := func(line int, format string, a ...any) error {
		where := path
		if line > 0 {
			where += " line " + strconv.Itoa(line)
		}
		return fmt.Errorf("%w: %s: %s", ErrBlauthConfig, where, fmt.Sprintf(format, a...))
	}
	data, fi, err := ReadBounded(path, MaxBlauthConfigBytes)
	switch {
	case errors.Is(err, fs.ErrNotExist) && missingOK:
		return &BlauthConfig{}, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, bad(0, "no such file")
	case errors.Is(err, ErrFileRefused):
		return nil, fmt.Errorf("%w: %w", ErrBlauthConfig, err)
	case err != nil:
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err // the path it repeats: bad names the file
		}
		return nil, bad(0, "%v", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && (int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o022 != 0) {
		return nil, bad(0, "another user may write it (mode %04o, owner uid %d): make it yours and writable by you only (chmod go-w)", fi.Mode().Perm(), st.Uid)
	}
	c, err := parseBlauthConfig(data, bad)
	if err != nil {
		return nil, err
	}
	c.Path = path
	return c, nil
}

// yamlErrPrefix is how yaml.v3 starts an error about a line.
var yamlErrPrefix = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

func parseBlauthConfig(data []byte, bad func(int, string, ...any) error) (*BlauthConfig, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		line := 0
		if m := yamlErrPrefix.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = msg[len(m[0]):]
		}
		return nil, bad(line, "not valid YAML: %s", msg)
	}
	c := &BlauthConfig{}
	if len(doc.Content) == 0 {
		return c, nil // empty, or comments only
	}
	root := doc.Content[0]
	if YAMLNull(root) {
		return c, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, bad(root.Line, "the top level must be a mapping of settings (key: value)")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], YAMLAlias(root.Content[i+1])
		key := k.Value
		if k.Kind != yaml.ScalarNode {
			return nil, bad(k.Line, "a key must be a plain name")
		}
		if seen[key] {
			return nil, bad(k.Line, "%s is set twice", key)
		}
		seen[key] = true
		i := slices.IndexFunc(blauthConfigKeys, func(d blauthConfigKey) bool { return d.name == key })
		if i < 0 {
			names := blauthConfigKeyNames()
			slices.Sort(names)
			return nil, bad(k.Line, "unknown key %q%s; the keys blauthd reads are: %s (docs/CONFIG.md)", key, didYouMean(key), strings.Join(names, ", "))
		}
		if line, err := blauthConfigKeys[i].set(c, v); err != nil {
			if line == 0 {
				line = v.Line
			}
			return nil, bad(line, "%v", err)
		}
	}
	return c, nil
}

// blauthConfigKeyNames are the names of blauthConfigKeys, in their order.
func blauthConfigKeyNames() []string {
	names := make([]string, len(blauthConfigKeys))
	for i, k := range blauthConfigKeys {
		names[i] = k.name
	}
	return names
}

// didYouMean is ` (did you mean "K"?)` for the known key closest to key, or "".
func didYouMean(key string) string {
	if s := ipc.Nearest(key, blauthConfigKeyNames()); len(s) > 0 {
		return fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return ""
}
