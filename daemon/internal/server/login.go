package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/ipc"
)

// serveLoginStart begins Blaxel's device login for a workspace; the daemon polls, the helper
// shows the user where to approve it and waits with login_wait.
func (s *Server) serveLoginStart(ctx context.Context, req request) *ipc.Message {
	ws := req.Value(ipc.KeyWorkspace)
	if ws == "" {
		return fail(ipc.CodeBadRequest, "a workspace is required", "blauth-helper login WORKSPACE")
	}
	if s.cfg.Logins == nil {
		return fail(ipc.CodeBadRequest, "this daemon does not use the bl config, where sessions are saved", "")
	}
	base := s.cfg.Resolver.DaemonBaseURL(ws)
	// The session is saved where bl keeps it, for the daemon's base: a caller's BL_API_URL or
	// BL_ENV does not apply, and the answer says so.
	sr := sourceRequest(req.Message)
	sr.Workspace = ws
	res, _ := s.resolve(sr)
	ignored := res.IgnoredCallerBase(true)
	id, da, err := s.cfg.Logins.Start(ctx, ws, base)
	if err != nil {
		return withIgnoredBase(errorAnswer(fmt.Errorf("device login could not start: %w", err)), ignored, base)
	}
	m := ok(ipc.KeyFlow, id, ipc.KeyWorkspace, ws, ipc.KeyUserCode, da.UserCode,
		ipc.KeyVerificationURI, da.VerificationURI, ipc.KeyVerificationURIComplete, da.VerificationURIComplete,
		ipc.KeyInterval, strconv.Itoa(da.Interval), ipc.KeyExpiresIn, strconv.Itoa(da.ExpiresIn), ipc.KeyAPIURL, base)
	if ignored != "" {
		m.Add(ipc.KeyHint, fmt.Sprintf("the caller's BL_API_URL / BL_ENV ask for %s, but this login goes to %s, the daemon's base; set the workspace's env: in the bl config, or start blauthd with BL_API_URL set", token.RedactURL(ignored), token.RedactURL(base)))
	}
	return m
}

// serveLoginWait waits up to wait= seconds (at most 30, 5 by default) for a login to end.
func (s *Server) serveLoginWait(ctx context.Context, req request) *ipc.Message {
	if s.cfg.Logins == nil {
		return fail(ipc.CodeBadRequest, "no such login in progress", "run blauth-helper login again")
	}
	w := 5 * time.Second
	if v := strings.TrimSpace(req.Value(ipc.KeyWait)); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 30 {
			w = time.Duration(n) * time.Second
		}
	}
	ws, err := s.cfg.Logins.Wait(ctx, req.Value(ipc.KeyFlow), w)
	if err != nil {
		resp := errorAnswer(err)
		if ipc.ErrorCode(ipc.AsError(resp)) == ipc.CodeBadRequest {
			resp.Set(ipc.KeyHint, "run blauth-helper login again")
		}
		return resp
	}
	return ok(ipc.KeyWorkspace, ws, ipc.KeySaved, s.cfg.BLConfigPath)
}
