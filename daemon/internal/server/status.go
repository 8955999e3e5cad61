package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/blauth/blauth/daemon/internal/resolver"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// StatusFor builds the status as seen by a caller with the given directory and environment.
func (s *Server) StatusFor(sr resolver.Request) ipc.Status {
	st := ipc.Status{Version: s.cfg.Version, PID: os.Getpid(), Socket: s.socket, Manager: s.cfg.Manager, Started: s.cfg.Started, Dotenvs: s.cfg.Resolver.WatchedDotenvs(),
		Keyring: s.keyringStatus()}
	names := s.cfg.Resolver.Workspaces()
	// The caller's own default workspace, which may come from its .env or environment.
	def := sr
	def.Workspace = ""
	// A resolution error still names the workspace it chose (a workspace without credentials).
	res, _ := s.resolve(def)
	if res != nil && res.Workspace != "" {
		st.Default, st.DefaultSource = res.Workspace, res.WorkspaceSource.String()
		names = appendUnique(names, res.Workspace)
	}
	st.SourceErrors = sourceErrors(s.cfg.Resolver.SourceErrors())
	if res != nil {
		st.SourceErrors = append(st.SourceErrors, sourceErrors(res.Errors)...)
	}
	if sr.Workspace != "" {
		names = appendUnique(names, sr.Workspace)
	}
	st.Workspaces = make([]ipc.WorkspaceStatus, 0, len(names))
	for _, w := range names {
		q := sr
		q.Workspace = w
		res, err := s.resolve(q)
		ws := ipc.WorkspaceStatus{Workspace: w}
		if res != nil {
			ws.Warnings = res.Warnings
		}
		if err != nil {
			ws.Error = err.Error()
		} else {
			c := res.Credential
			ws.Kind, ws.Source = c.Kind, c.Source.String()
			for _, s := range res.Shadowed {
				ws.Shadows = append(ws.Shadows, s.Kind+" from "+s.Source.String())
			}
			if e, ok := s.cfg.Broker.Lookup(c); ok {
				ws.Expiry, ws.RefreshAt, ws.LastRefresh, ws.LastError, ws.Refused = e.Expiry, e.RefreshAt, e.LastRefresh, e.LastError, e.Refused
				ws.WriteBackError = e.WriteBackError
				ws.Lifetime, ws.ClockSkew, ws.RefreshTokenRotates, ws.Alert = e.Lifetime, e.ClockSkew, e.RefreshTokenRotates, e.Alert
			}
		}
		st.Workspaces = append(st.Workspaces, ws)
	}
	st.Cached = s.cfg.Broker.Status()
	return st
}

func sourceErrors(es []sources.SourceError) []ipc.SourceError {
	var out []ipc.SourceError
	for _, e := range es {
		out = append(out, ipc.SourceError{Source: ipc.SourceRef{Kind: e.Source.Kind, Where: e.Source.Where}, Error: e.Error})
	}
	return out
}

func appendUnique(xs []string, x string) []string {
	if slices.Contains(xs, x) {
		return xs
	}
	return append(xs, x)
}

// status answers action=status. From version 2 the JSON may be split over several json= lines
// (ipc.Message.Long joins them), so any number of workspaces fits; a version 1 client gets it
// on one line, or an error when it is too long for one.
func (s *Server) serveStatus(ctx context.Context, req request) *ipc.Message {
	b, err := json.Marshal(s.StatusFor(sourceRequest(req.Message)))
	if err != nil {
		return fail(ipc.CodeInternal, err.Error(), "")
	}
	if req.version < 2 {
		if len(b)+len(ipc.KeyJSON)+1 > ipc.MaxLineSize {
			return fail(ipc.CodeBadRequest, fmt.Sprintf("the status is %d bytes, too long for one line of protocol version 1", len(b)), "send version=2: its answers carry long values over several lines")
		}
		return ok(ipc.KeyJSON, string(b))
	}
	m := ok()
	m.AddLong(ipc.KeyJSON, string(b))
	return m
}
