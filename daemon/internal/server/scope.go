package server

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// Scope restricts a socket forwarded to a less trusted place (an SSH session, a container): it
// answers get and watch for the named workspaces only, from the credentials the daemon holds
// itself, and ping; nothing else (no status, erase, reload, stop, login, logout).
type Scope struct {
	Workspaces map[string]bool
}

// NewScope returns the scope of the named workspaces.
func NewScope(workspaces []string) *Scope {
	s := &Scope{Workspaces: map[string]bool{}}
	for _, w := range workspaces {
		s.Workspaces[w] = true
	}
	return s
}

// String lists the scope's workspaces.
func (s *Scope) String() string {
	ws := make([]string, 0, len(s.Workspaces))
	for w := range s.Workspaces {
		ws = append(ws, w)
	}
	sort.Strings(ws)
	return strings.Join(ws, ",")
}

// scopedActions are what a scoped socket answers.
var scopedActions = map[string]bool{ipc.ActionGet: true, ipc.ActionWatch: true, ipc.ActionPing: true}

// scopedKeys are the keys of a request that a scoped socket uses, besides its workspace.
var scopedKeys = map[string]bool{ipc.KeyVersion: true, ipc.KeyAction: true, ipc.KeyMinTTL: true}

// scopedMaxRequest bounds a request on a scoped socket: a get or watch needs a few hundred
// bytes, and a peer's cwd and variables, which the scope drops, fit too.
const scopedMaxRequest = 16 << 10

// admit checks a request against the scope, and rewrites it to what the scope serves: the
// peer's working directory and variables name files and secrets of another machine or
// container, so only its choice of workspace is kept. It returns the refusal, if any.
func (s *Scope) admit(req *ipc.Message) *ipc.Message {
	a := req.Value(ipc.KeyAction)
	if !scopedActions[a] {
		return fail(ipc.CodeForbidden, fmt.Sprintf("this socket is scoped to workspaces %s and answers only get, watch and ping, not %q", s, ipc.Clip(a, 40)), "use the daemon's own socket on its machine for anything else")
	}
	if a == ipc.ActionPing {
		return nil
	}
	ws := req.Value(ipc.KeyWorkspace)
	if ws == "" {
		ws = req.Value(ipc.KeyEnvPrefix + sources.VarWorkspace)
	}
	if ws == "" && len(s.Workspaces) == 1 {
		ws = s.String()
	}
	if ws == "" {
		return fail(ipc.CodeNoWorkspace, fmt.Sprintf("this socket serves workspaces %s: name one", s), "pass -w WORKSPACE, or set BL_WORKSPACE")
	}
	if !s.Workspaces[ws] {
		return fail(ipc.CodeForbidden, fmt.Sprintf("workspace %s is not served on this socket (it serves %s)", ipc.Clip(ws, 100), s), "add it to the daemon's --scoped-socket, or use a socket that serves it")
	}
	// What the scope serves needs nothing else: a watcher keeps its request for its whole life,
	// and this keeps it a few bytes whatever the peer sent.
	out := make([]ipc.Field, 0, len(scopedKeys)+1)
	for _, f := range req.Fields {
		if scopedKeys[f.Key] {
			out = append(out, f)
		}
	}
	req.Fields = append(out, ipc.Field{Key: ipc.KeyWorkspace, Value: ws})
	return nil
}

// redact makes an answer fit for the scope's peer, which is on another machine or in a
// container: it learns nothing of the daemon's machine but the token and its workspace. A
// source is named by its kind only (bl_config, daemon_env, keyring), what a .env sets is
// dropped, the API base loses any user info, and a hint on a token (a bl config that could not
// be written, which names its path) becomes a pointer to the daemon's own user.
func (s *Scope) redact(m *ipc.Message) {
	out := m.Fields[:0]
	for _, f := range m.Fields {
		switch f.Key {
		case ipc.KeyDotenv, ipc.KeyDotenvWorkspace, ipc.KeyDotenvSets, ipc.KeyDotenvLines:
			continue
		case ipc.KeySource:
			f.Value, _, _ = strings.Cut(f.Value, ":")
		case ipc.KeyAPIURL:
			f.Value = token.RedactURL(f.Value)
		case ipc.KeyHint:
			if ipc.AsError(m) == nil {
				f.Value = "blauthd reports a problem with this credential's source on its own machine; its user sees it with blauth-helper status there"
			}
		}
		out = append(out, f)
	}
	m.Fields = out
}

// peerRefusal says why a peer is not the daemon's user, in the terms of where it most likely
// comes from: a user the daemon's own user namespace does not map, a rootless container's
// subordinate uid, or another user.
func peerRefusal(uid, ours int) string {
	switch {
	case uid == 65534 && inOwnUserNamespace():
		// The kernel reports a peer in the reader's namespace: a daemon in the initial one sees
		// every uid as it is, so 65534 means "unmapped" only when the daemon itself is confined.
		return fmt.Sprintf("the peer's uid is 65534, the overflow uid: its real uid is not mapped in the user namespace this daemon runs in (systemd's PrivateUsers=, a container), so it is another user, root included; run the client as uid %d (docker --user %d:GID, podman --userns=keep-id)", ours, ours)
	case inSubordinateRange(uid):
		return fmt.Sprintf("the peer's uid %d is one of your subordinate uids: a rootless container's non-root user; run the container as root inside it, or with podman --userns=keep-id, so that it is your uid %d", uid, ours)
	case uid >= 0:
		return fmt.Sprintf("the peer runs as uid %d; this daemon serves only uid %d", uid, ours)
	}
	return "the peer's uid could not be read"
}

// inOwnUserNamespace reports whether the daemon runs in a user namespace other than the
// initial one, whose uid_map is the identity over every uid. A variable for tests.
var inOwnUserNamespace = func() bool {
	data, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(data))
	return len(f) != 3 || f[0] != "0" || f[1] != "0" || f[2] != "4294967295"
}

// inSubordinateRange reports whether uid falls in a subordinate uid range of /etc/subuid (the
// ranges rootless containers map their users to).
func inSubordinateRange(uid int) bool {
	data, err := os.ReadFile("/etc/subuid")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		n, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && uid >= start && uid < start+n {
			return true
		}
	}
	return false
}
