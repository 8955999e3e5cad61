package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// WorkspaceStatus is one workspace in a status answer: which credential wins, what it shadows,
// the state of its token, and any source error. It never holds a secret.
type WorkspaceStatus struct {
	Workspace    string                `json:"workspace"`
	Kind         string                `json:"kind,omitempty"`
	Source       string                `json:"source,omitempty"`
	Shadows      []string              `json:"shadows,omitempty"`
	Expiry       time.Time             `json:"expiry,omitzero"`
	RefreshAt    time.Time             `json:"refresh_at,omitzero"`
	LastRefresh  time.Time             `json:"last_refresh,omitzero"`
	LastError    string                `json:"last_error,omitempty"`
	Refused      bool                  `json:"refused,omitempty"`
	WriteBack    string                `json:"write_back_error,omitempty"`
	Error        string                `json:"error,omitempty"`
	SourceErrors []sources.SourceError `json:"source_errors,omitempty"`
}

// Status is the answer to action=status, carried as JSON in json=.
type Status struct {
	Version    string            `json:"version"`
	PID        int               `json:"pid"`
	Socket     string            `json:"socket"`
	Started    time.Time         `json:"started"`
	Default    string            `json:"default_workspace,omitempty"`
	Workspaces []WorkspaceStatus `json:"workspaces"`
	Cached     []EntryStatus     `json:"cached"`
	Dotenvs    int               `json:"watched_dotenv_files"`
	// SourceErrors are the problems of every source this caller's answers draw on (the bl
	// config, the keyring, its .env), each listed once.
	SourceErrors []sources.SourceError `json:"source_errors,omitempty"`
}

// StatusFor builds the status as seen by a caller with the given directory and environment.
func (d *Daemon) StatusFor(sr sources.Request) Status {
	st := Status{Version: d.cfg.Version, PID: os.Getpid(), Socket: d.socket, Started: d.started, Dotenvs: d.resolver.WatchedDotenvs()}
	names := d.resolver.Workspaces()
	// The caller's own default workspace, which may come from its .env or environment.
	def := sr
	def.Workspace = ""
	// A resolution error still names the workspace it chose (a workspace without credentials).
	res, _ := d.resolver.Resolve(def)
	if res != nil && res.Workspace != "" {
		st.Default = res.Workspace
		names = appendUnique(names, res.Workspace)
	}
	if res != nil {
		st.SourceErrors = res.Errors
	}
	if sr.Workspace != "" {
		names = appendUnique(names, sr.Workspace)
	}
	cached := d.broker.Status()
	byKey := map[string]EntryStatus{}
	for _, e := range cached {
		byKey[e.key] = e
	}
	for _, w := range names {
		q := sr
		q.Workspace = w
		res, err := d.resolver.Resolve(q)
		ws := WorkspaceStatus{Workspace: w}
		if err != nil {
			ws.Error = err.Error()
		} else {
			c := res.Credential
			ws.Kind, ws.Source = c.Kind, c.Source.String()
			for _, s := range res.Shadowed {
				ws.Shadows = append(ws.Shadows, s.Kind+" from "+s.Source.String())
			}
			if e, ok := byKey[c.Key()]; ok {
				ws.Expiry, ws.RefreshAt, ws.LastRefresh, ws.LastError, ws.Refused = e.Expiry, e.RefreshAt, e.LastRefresh, e.LastError, e.Refused
				ws.WriteBack = e.WriteBackError
			}
		}
		st.Workspaces = append(st.Workspaces, ws)
	}
	st.Cached = cached
	if st.Cached == nil {
		st.Cached = []EntryStatus{}
	}
	return st
}

func appendUnique(xs []string, x string) []string {
	for _, y := range xs {
		if y == x {
			return xs
		}
	}
	return append(xs, x)
}

// status answers action=status. From version 2 the JSON may be split over several json= lines
// (ipc.Message.Long joins them), so any number of workspaces fits; a version 1 client gets it
// on one line, or an error when it is too long for one.
func (d *Daemon) status(req *ipc.Message, version int) *ipc.Message {
	b, err := json.Marshal(d.StatusFor(sourceRequest(req)))
	if err != nil {
		return fail(ipc.CodeInternal, err.Error(), "")
	}
	if version < 2 {
		if len(b)+len(ipc.KeyJSON)+1 > ipc.MaxLineSize {
			return fail(ipc.CodeBadRequest, fmt.Sprintf("the status is %d bytes, too long for one line of protocol version 1", len(b)), "send version=2: its answers carry long values over several lines")
		}
		return ok(ipc.KeyJSON, string(b))
	}
	m := ok()
	m.AddLong(ipc.KeyJSON, string(b))
	return m
}
