package ipc

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Request and response keys. docs/PROTOCOL.md describes each.
const (
	KeyVersion   = "version"
	KeyAction    = "action"
	KeyWorkspace = "workspace"
	KeyDir       = "cwd"     // the caller's working directory, for its .env
	KeyEnvPrefix = "env."    // env.BL_API_KEY=… : the caller's BL_* variables
	KeyMinTTL    = "min_ttl" // seconds of remaining life the caller needs
	KeyKind      = "kind"
	KeySecret    = "secret"

	KeyStatus = "status" // ok | error
	KeyToken  = "token"
	KeyExpiry = "expiry" // Unix seconds; 0 when the token does not expire
	KeySource = "source"
	KeyAPIURL = "api_url" // the API base the token is for (…/v0), version 2
	// KeyWorkspaceSource is what chose the workspace, KIND:WHERE (request:workspace,
	// dotenv:/p/.env#BL_WORKSPACE, blaxel_toml:/p/blaxel.toml#workspace, route:PATTERN (FILE line N)…).
	KeyWorkspaceSource = "workspace_source"

	// What the caller's .env sets (version 2), so that a client about to run a command with
	// another workspace's variables can tell that Blaxel's SDKs would read the .env instead.
	KeyDotenv          = "dotenv"           // its path
	KeyDotenvWorkspace = "dotenv_workspace" // its BL_WORKSPACE
	KeyDotenvSets      = "dotenv_sets"      // the BL_* variables it sets, comma-separated
	KeyDotenvLines     = "dotenv_lines"     // the line setting each: NAME:LINE, comma-separated
	KeyCode            = "code"
	KeyMessage         = "message"
	KeyHint            = "hint"
	KeyJSON            = "json"

	KeyVerificationURI         = "verification_uri"
	KeyVerificationURIComplete = "verification_uri_complete"
	KeyUserCode                = "user_code"
	KeyInterval                = "interval"
	KeyExpiresIn               = "expires_in" // seconds a device code lives
	KeyFlow                    = "flow"       // a device login in progress
	KeyWait                    = "wait"       // seconds login_wait may wait
	KeySaved                   = "saved"      // where a device login's session was saved

	KeyPID           = "pid"
	KeyDaemonVersion = "daemon_version"
	KeyDropped       = "dropped" // erase: whether a cached token was dropped
	KeyManager       = "manager" // ping, stop: what started the daemon (systemd, spawned, foreground)
	KeySeq           = "seq"     // watch: the message's number in its stream, from 1
	// ping: whether the daemon uses the OS keyring (on, off) and, when off, why. A client asks
	// before it reads a secret to store there (blauth-helper login --api-key).
	KeyKeyring    = "keyring"
	KeyKeyringOff = "keyring_off"
)

// What started a daemon, in manager=.
const (
	ManagerSystemd    = "systemd"    // socket activation: the socket stays and starts it again
	ManagerSpawned    = "spawned"    // started on demand by a client (blauth-helper)
	ManagerForeground = "foreground" // started by hand or by a service manager without activation
)

// Actions a daemon understands.
const (
	ActionGet            = "get"            // a token for a workspace
	ActionErase          = "erase"          // drop a cached token (after a 401)
	ActionStatus         = "status"         // every workspace, as JSON
	ActionReload         = "reload"         // re-read every source
	ActionPing           = "ping"           // liveness
	ActionKeyringSet     = "keyring_set"    // store a secret in the OS keyring
	ActionKeyringDelete  = "keyring_delete" // remove it
	ActionLoginStart     = "login_start"    // begin Blaxel's device flow
	ActionLoginWait      = "login_wait"     // wait for it to complete
	ActionStop           = "stop"           // stop the daemon (version 2)
	ActionWatch          = "watch"          // a get answer now and at every change (version 2)
	StatusOK, StatusFail = "ok", "error"
)

// Credential kinds, as reported in kind=.
const (
	KindAPIKey            = "api_key"
	KindClientCredentials = "client_credentials"
	KindLogin             = "login"
)

// The time a get may take. A daemon gives one exchange with the token endpoint at most
// ExchangeTimeout, and answers a get that waits for one within GetBudget (with unavailable when
// the exchange is not done): a client should wait a little longer than GetBudget for an answer.
const (
	ExchangeTimeout = 20 * time.Second
	GetBudget       = 25 * time.Second
)

// Error codes. Clients branch on these, never on the message text.
const (
	CodeBadRequest         = "bad_request"         // malformed, oversized or incomplete request
	CodeUnsupportedVersion = "unsupported_version" // version= names a protocol this daemon does not speak
	CodeUnknownAction      = "unknown_action"
	CodeNoWorkspace        = "no_workspace"        // no workspace given and none configured
	CodeNoCredentials      = "no_credentials"      // the workspace has no credential in any source
	CodeBadSource          = "bad_source"          // the caller's own source (its .env) exists but cannot be read
	CodeAuthFailed         = "auth_failed"         // the token endpoint refused the credential for good
	CodeUnavailable        = "unavailable"         // no valid token and the endpoint cannot be reached now
	CodeKeyringUnavailable = "keyring_unavailable" // the OS keyring did not answer
	CodeLoginPending       = "login_pending"       // device flow still waiting for the user
	CodeLoginExpired       = "login_expired"       // device code expired or was denied
	CodeForbidden          = "forbidden"           // peer is another user
	CodeShuttingDown       = "shutting_down"
	CodeBusy               = "busy" // too many connections; retry in a moment
	CodeInternal           = "internal"
)

// Error is an error answer from the daemon.
type Error struct {
	Code    string
	Message string
	Hint    string
}

func (e *Error) Error() string { return e.Message }

// ErrorCode returns the protocol code carried by err, or "" if it carries none.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// ErrorMessage builds the error answer for e.
func ErrorMessage(e *Error) *Message {
	m := NewMessage(KeyVersion, Version, KeyStatus, StatusFail, KeyCode, e.Code, KeyMessage, oneLine(e.Message))
	if e.Hint != "" {
		m.Add(KeyHint, oneLine(e.Hint))
	}
	return m
}

// Clip makes s, a value from outside (a request's field, an endpoint's error text, a path), fit
// to be quoted in one line of an answer or a log: control characters become spaces, and a value
// longer than n bytes is cut at a character boundary and ends with "…".
func Clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' || c == 0 {
			b[i] = ' '
		}
	}
	return string(b)
}

// AsError returns the *Error carried by an answer, or nil when it is a success.
func AsError(m *Message) error {
	if m.Value(KeyStatus) != StatusFail {
		return nil
	}
	code := m.Value(KeyCode)
	if code == "" {
		code = CodeInternal
	}
	return &Error{Code: code, Message: m.Value(KeyMessage), Hint: m.Value(KeyHint)}
}

// Token is a successful get answer.
type Token struct {
	Workspace string
	Token     string
	Kind      string
	Source    string
	Expiry    time.Time // zero when the token does not expire
	// WorkspaceSource is what chose the workspace (KeyWorkspaceSource), "" from an older daemon.
	WorkspaceSource string
	// Hint, when set, is something the user should know although the token is good (version 2).
	Hint string
	// APIURL is the Blaxel API base the token was issued for and must be sent to (version 2):
	// https://api.blaxel.ai/v0 unless BL_API_URL or BL_ENV chose another.
	APIURL string
	// Dotenv is the caller's .env, when it sets BL_* variables: its path, its BL_WORKSPACE, and
	// the names of the BL_* variables it sets (never their values).
	Dotenv          string
	DotenvWorkspace string
	DotenvSets      []string
	// DotenvLines is the line of the .env that sets each of DotenvSets (empty from a daemon
	// older than this field).
	DotenvLines map[string]int
	// RunDomains are the run_domains: of blauth's config file (KeyRunDomains), as the daemon
	// read them; a client checks them with ParseRunDomains before it uses them.
	RunDomains []string
}

// ParseToken reads a get answer.
func ParseToken(m *Message) (*Token, error) {
	if err := AsError(m); err != nil {
		return nil, err
	}
	t := &Token{Workspace: m.Value(KeyWorkspace), Token: m.Value(KeyToken), Kind: m.Value(KeyKind), Source: m.Value(KeySource), WorkspaceSource: m.Value(KeyWorkspaceSource),
		Hint: m.Value(KeyHint), APIURL: m.Value(KeyAPIURL), Dotenv: m.Value(KeyDotenv), DotenvWorkspace: m.Value(KeyDotenvWorkspace)}
	if s := m.Value(KeyDotenvSets); s != "" {
		t.DotenvSets = strings.Split(s, ",")
	}
	if s := m.Value(KeyRunDomains); s != "" {
		t.RunDomains = strings.Split(s, ",")
	}
	for _, nl := range strings.Split(m.Value(KeyDotenvLines), ",") {
		name, line, ok := strings.Cut(nl, ":")
		if n, err := strconv.Atoi(line); ok && err == nil && n > 0 {
			if t.DotenvLines == nil {
				t.DotenvLines = map[string]int{}
			}
			t.DotenvLines[name] = n
		}
	}
	if t.Token == "" {
		return nil, fmt.Errorf("%w: answer holds no token", ErrMalformed)
	}
	if s := m.Value(KeyExpiry); s != "" && s != "0" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: expiry is not a number", ErrMalformed)
		}
		t.Expiry = time.Unix(n, 0)
	}
	return t, nil
}

// Message returns the wire form of a get answer.
func (t *Token) Message() *Message { return t.MessageInto(nil) }

// MessageInto is Message written into m, whose fields it replaces, reusing their room (a new
// message when m is nil): a server answering get after get on a connection reuses one answer.
// The fields m held before must no longer be in use.
func (t *Token) MessageInto(m *Message) *Message {
	exp := "0"
	if !t.Expiry.IsZero() {
		exp = expiryText(t.Expiry.Unix())
	}
	n := 7 // the fields below, and the room for those that follow
	for _, v := range []string{t.APIURL, t.WorkspaceSource, t.Hint} {
		if v != "" {
			n++
		}
	}
	if t.Dotenv != "" {
		n += 4
	}
	if m == nil {
		m = newMessage(n)
	} else {
		m.Fields, m.text = m.Fields[:0], ""
	}
	m.Fields = append(m.Fields, Field{KeyVersion, Version}, Field{KeyStatus, StatusOK}, Field{KeyWorkspace, t.Workspace},
		Field{KeyToken, t.Token}, Field{KeyExpiry, exp}, Field{KeyKind, t.Kind}, Field{KeySource, t.Source})
	if t.APIURL != "" {
		m.Add(KeyAPIURL, t.APIURL)
	}
	if len(t.RunDomains) > 0 {
		m.Add(KeyRunDomains, strings.Join(t.RunDomains, ","))
	}
	if t.WorkspaceSource != "" && ValidValue(t.WorkspaceSource) {
		m.Add(KeyWorkspaceSource, t.WorkspaceSource)
	}
	if t.Dotenv != "" {
		m.Add(KeyDotenv, t.Dotenv)
		if t.DotenvWorkspace != "" && ValidValue(t.DotenvWorkspace) {
			m.Add(KeyDotenvWorkspace, t.DotenvWorkspace)
		}
		m.Add(KeyDotenvSets, strings.Join(t.DotenvSets, ","))
		var lines []string
		for _, name := range t.DotenvSets {
			if n := t.DotenvLines[name]; n > 0 {
				lines = append(lines, name+":"+strconv.Itoa(n))
			}
		}
		if len(lines) > 0 {
			m.Add(KeyDotenvLines, strings.Join(lines, ","))
		}
	}
	if t.Hint != "" {
		m.Add(KeyHint, oneLine(t.Hint))
	}
	return m
}

// lastExpiry is the expiry expiryText wrote last: a server answers the same token, and so the
// same expiry, many times over.
var lastExpiry atomic.Pointer[struct {
	unix int64
	text string
}]

// expiryText is unix in decimal, the last one written again without a new string.
func expiryText(unix int64) string {
	if e := lastExpiry.Load(); e != nil && e.unix == unix {
		return e.text
	}
	e := &struct {
		unix int64
		text string
	}{unix, strconv.FormatInt(unix, 10)}
	lastExpiry.Store(e)
	return e.text
}

// ParseVersion reads a request's version=: 1 when absent. ok is false for anything but a
// positive decimal number.
func ParseVersion(s string, present bool) (v int, ok bool) {
	if !present {
		return 1, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}
