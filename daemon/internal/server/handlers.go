package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blauth/blauth/daemon/internal/resolver"
	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// request is one request being handled, at the protocol version both sides speak.
type request struct {
	*ipc.Message
	version int
	room    *room // nil: nothing to reuse
}

// room is what a connection reuses from one get to the next: the resolution and the answer.
// Neither is in use once the answer is written.
type room struct {
	res    resolver.Resolution
	answer ipc.Message
	// now is when the request being answered arrived (readRequest).
	now time.Time
	// The get res answered, when it may answer the same get again: its text, the resolver's
	// stamp read before resolving it, and when it was resolved.
	resolved struct {
		ok    bool
		text  string
		stamp uint64
		at    time.Time
	}
}

// reuseFor is the resolution to answer get req from again, nil when it must be resolved anew.
// The same text on the same connection is the same request (the same peer, directory and
// variables); while the stamp stays, no file or source it read has changed. A second bounds the
// reuse whatever the stamp says, so that the caches' idle clocks still see the directory asked
// for and nothing can keep a stale answer longer.
func (rm *room) reuseFor(req *ipc.Message, stamp uint64) *resolver.Resolution {
	if rm == nil || !rm.resolved.ok || req.Text() == "" || rm.resolved.text != req.Text() || rm.resolved.stamp != stamp || rm.now.Sub(rm.resolved.at) >= time.Second {
		return nil
	}
	return &rm.res
}

// stamp marks an answer to req with the version both sides speak.
func (req request) stamp(answer *ipc.Message) {
	answer.Set(ipc.KeyVersion, strconv.Itoa(min(req.version, ipc.VersionNumber)))
}

// handler answers one action.
type handler func(s *Server, ctx context.Context, req request) *ipc.Message

// handlers is the table of actions, and the protocol version each needs.
var handlers = map[string]struct {
	serve   handler
	version int
}{
	ipc.ActionGet:           {(*Server).serveGet, 1},
	ipc.ActionErase:         {(*Server).serveErase, 1},
	ipc.ActionStatus:        {(*Server).serveStatus, 1},
	ipc.ActionPing:          {(*Server).servePing, 1},
	ipc.ActionReload:        {(*Server).serveReload, 1},
	ipc.ActionKeyringSet:    {(*Server).serveKeyring, 1},
	ipc.ActionKeyringDelete: {(*Server).serveKeyring, 1},
	ipc.ActionLoginStart:    {(*Server).serveLoginStart, 1},
	ipc.ActionLoginWait:     {(*Server).serveLoginWait, 1},
	ipc.ActionStop:          {(*Server).serveStop, 2},
	// watch takes over its connection: serveConn routes it to serveWatch.
}

func fail(code, msg, hint string) *ipc.Message {
	return ipc.ErrorMessage(&ipc.Error{Code: code, Message: msg, Hint: hint})
}

func ok(kv ...string) *ipc.Message {
	return ipc.NewMessage(append([]string{ipc.KeyVersion, ipc.Version, ipc.KeyStatus, ipc.StatusOK}, kv...)...)
}

// handle answers one request. It never panics the daemon: a bug in one request is logged and
// answered as internal. The answer is in the version both sides speak.
func (s *Server) handle(ctx context.Context, m *ipc.Message, rm *room) (resp *ipc.Message) {
	req := request{version: 1} // until checkRequest reads it
	defer func() {
		// One deferred function: the panic answer is stamped too, and the panic logged is the
		// handler's, not one from stamping a nil answer.
		if p := recover(); p != nil {
			s.log.Error().Interface("panic", p).Msg("request handler panicked")
			resp = fail(ipc.CodeInternal, "internal error", "")
		}
		req.stamp(resp)
	}()
	req, refusal := checkRequest(m)
	if refusal != nil {
		return refusal
	}
	req.room = rm
	a := req.Value(ipc.KeyAction)
	h, known := handlers[a]
	switch {
	case a == "":
		return fail(ipc.CodeBadRequest, "the request has no action", "send action=get")
	case !known:
		return fail(ipc.CodeUnknownAction, fmt.Sprintf("unknown action %q", ipc.Clip(a, 40)), "")
	case req.version < h.version:
		return fail(ipc.CodeUnknownAction, fmt.Sprintf("%s needs protocol version %d", a, h.version), fmt.Sprintf("send version=%d", h.version))
	}
	return h.serve(s, ctx, req)
}

// checkRequest reads the request's version and refuses the common keys a caller got wrong,
// rather than ignoring them and serving another workspace's token.
func checkRequest(m *ipc.Message) (request, *ipc.Message) {
	v, good := ipc.ParseVersion(m.Get(ipc.KeyVersion))
	req := request{Message: m, version: max(v, 1)}
	if !good {
		return req, fail(ipc.CodeUnsupportedVersion, fmt.Sprintf("protocol version %q is not a version number; this daemon speaks 1 to %s", ipc.Clip(m.Value(ipc.KeyVersion), 20), ipc.Version), "upgrade blauth-helper or the client library")
	}
	if dir, ok := m.Get(ipc.KeyDir); ok {
		switch {
		case dir == "" || !filepath.IsAbs(dir):
			return req, fail(ipc.CodeBadRequest, fmt.Sprintf("cwd %q is not an absolute path", ipc.Clip(dir, 200)), "send the caller's working directory as an absolute path, or no cwd at all")
		case len(dir) > ipc.MaxCwd:
			return req, fail(ipc.CodeBadRequest, fmt.Sprintf("cwd is %d bytes long, over the %d a path may have", len(dir), ipc.MaxCwd), "")
		}
	}
	if s := m.Value(ipc.KeyMinTTL); s != "" {
		if _, err := parseSeconds(s); err != nil {
			return req, fail(ipc.CodeBadRequest, "min_ttl must be a number of seconds", "")
		}
	}
	return req, nil
}

// sourceRequest reads the caller's workspace, directory and BL_* variables.
func sourceRequest(req *ipc.Message) resolver.Request { return sourceRequestIn(req, nil) }

// sourceRequestIn is sourceRequest putting the variables in env, an empty map, when not nil.
func sourceRequestIn(req *ipc.Message, env map[string]string) resolver.Request {
	r := resolver.Request{Workspace: req.Value(ipc.KeyWorkspace), Dir: req.Value(ipc.KeyDir)}
	for _, f := range req.Fields {
		if name, ok := strings.CutPrefix(f.Key, ipc.KeyEnvPrefix); ok && strings.HasPrefix(name, "BL_") {
			if env == nil {
				env = map[string]string{}
			}
			env[name] = f.Value
		}
	}
	if len(env) > 0 {
		r.Env = env
	}
	return r
}

// envMaps hold the BL_* variables of gets while they are resolved: a resolution keeps none
// of the map, and making one cost a get with variables two allocations.
var envMaps = sync.Pool{New: func() any { return map[string]string{} }}

func parseSeconds(s string) (time.Duration, error) {
	// Digits only, no sign, no leading zero: the one way to write each number.
	if s == "" || len(s) > 10 || s[0] == '0' && len(s) > 1 {
		return 0, errBadNumber
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errBadNumber
		}
		n = n*10 + int64(s[i]-'0')
	}
	if n > 1<<31 {
		return 0, errBadNumber
	}
	return time.Duration(n) * time.Second, nil
}

var errBadNumber = errors.New("bad number")

func (s *Server) serveGet(ctx context.Context, req request) *ipc.Message {
	resp, _ := s.get(ctx, req.Message, req.room)
	if ipc.AsError(resp) == nil {
		s.cfg.Stats.countServed(resp.Value(ipc.KeyKind))
	}
	return resp
}

// get answers a get, and says which credential it served (nil when none). With rm, the
// resolution and the answer are rm's; else they are new.
func (s *Server) get(ctx context.Context, req *ipc.Message, rm *room) (*ipc.Message, *sources.Credential) {
	var answer *ipc.Message // nil: a new one
	if rm != nil {
		answer = &rm.answer
	}
	stamp := s.cfg.Resolver.Stamp()
	res := rm.reuseFor(req, stamp)
	if res == nil {
		if rm != nil {
			res = &rm.res
			rm.resolved.ok = false
		} else {
			res = new(resolver.Resolution)
		}
		env := envMaps.Get().(map[string]string)
		err := s.cfg.Resolver.ResolveInto(res, sourceRequestIn(req, env))
		clear(env)
		envMaps.Put(env)
		if err != nil {
			return s.resolutionError(res, err), nil
		}
		if err := s.checkBase(res.Credential.BaseURL); err != nil {
			return badBaseURL(res, err), res.Credential
		}
		if rm != nil && res.Reusable {
			rm.resolved.ok, rm.resolved.text, rm.resolved.stamp, rm.resolved.at = true, req.Text(), stamp, rm.now
		}
	}
	minTTL, _ := parseSeconds(req.Value(ipc.KeyMinTTL))
	c := res.Credential
	t, err := s.cfg.Broker.Get(ctx, c, minTTL, res.DaemonHeld())
	if err != nil {
		return withIgnoredBase(errorAnswer(err), res.IgnoredCallerBase(res.DaemonHeld()), res.DaemonBase), c
	}
	tok := ipc.Token{Workspace: res.Workspace, Token: t.Token, Kind: c.Kind, Source: s.recent.names.Get(c.Source, sources.Provenance.String), WorkspaceSource: s.recent.names.Get(res.WorkspaceSource, sources.Provenance.String), Expiry: t.Expiry, Hint: t.Warning, APIURL: c.BaseURL,
		Dotenv: res.Dotenv.Path, DotenvWorkspace: res.Dotenv.Workspace, DotenvSets: res.Dotenv.Names, DotenvLines: res.Dotenv.Lines, RunDomains: s.cfg.RunDomains}
	return tok.MessageInto(answer), c
}

// resolve is the resolution of req, new.
func (s *Server) resolve(req resolver.Request) (*resolver.Resolution, error) {
	res := new(resolver.Resolution)
	return res, s.cfg.Resolver.ResolveInto(res, req)
}

// checkBase is token.CheckURL, remembering the last bases it checked: nearly every get goes to
// the same one, and parsing it again cost an allocation per request.
func (s *Server) checkBase(raw string) error { return s.recent.bases.Get(raw, token.CheckURL) }

// withIgnoredBase names, in an error answer, the API base the caller asked for with its
// BL_API_URL or BL_ENV when it was not used: what the daemon holds goes only to its own base.
func withIgnoredBase(m *ipc.Message, asked, used string) *ipc.Message {
	if asked == "" {
		return m
	}
	asked, used = token.RedactURL(asked), token.RedactURL(used)
	m.Set(ipc.KeyMessage, m.Value(ipc.KeyMessage)+fmt.Sprintf(" (the caller's BL_API_URL / BL_ENV ask for %s; a credential blauthd holds itself goes only to %s)", asked, used))
	hint := "to use " + asked + " with this workspace, set BL_API_URL or BL_ENV in blauthd's own environment, or the workspace's env: in the bl config"
	if h := m.Value(ipc.KeyHint); h != "" {
		hint = h + "; " + hint
	}
	m.Set(ipc.KeyHint, hint)
	return m
}

// badBaseURL answers a get whose credential goes to an API base that is not a usable URL: a
// configuration error, named by where BL_API_URL was set and never quoted (it may hold a
// password).
func badBaseURL(res *resolver.Resolution, err error) *ipc.Message {
	where := "the caller's environment or .env"
	if res.DaemonHeld() {
		where = "blauthd's own environment"
	}
	return fail(ipc.CodeBadRequest, fmt.Sprintf("the API base for workspace %s, BL_API_URL in %s, is %v", res.Workspace, where, err),
		"fix BL_API_URL there: an absolute https URL such as https://api.blaxel.ai/v0 (blauthd never quotes it, it may hold a password)")
}

func (s *Server) serveErase(ctx context.Context, req request) *ipc.Message {
	res, err := s.resolve(sourceRequest(req.Message))
	if err != nil {
		return s.resolutionError(res, err)
	}
	dropped := s.cfg.Broker.Erase(res.Credential, req.Value(ipc.KeyToken))
	s.log.Info().Str("workspace", res.Workspace).Bool("dropped", dropped).Msg("erase")
	return ok(ipc.KeyWorkspace, res.Workspace, ipc.KeyDropped, strconv.FormatBool(dropped))
}

func (s *Server) servePing(ctx context.Context, req request) *ipc.Message {
	m := ok(ipc.KeyPID, strconv.Itoa(os.Getpid()), ipc.KeyDaemonVersion, s.cfg.Version, ipc.KeyManager, s.cfg.Manager)
	if s.cfg.Scope == nil { // a scoped socket stores no secret: whether it could is none of its peers' business
		if s.cfg.Keyring != nil {
			m.Add(ipc.KeyKeyring, "on")
		} else {
			m.Add(ipc.KeyKeyring, "off")
			m.Add(ipc.KeyKeyringOff, s.keyringOff())
		}
	}
	return m
}

// serveStop answers; serveConn stops the daemon once the answer is written.
func (s *Server) serveStop(ctx context.Context, req request) *ipc.Message {
	return ok(ipc.KeyPID, strconv.Itoa(os.Getpid()), ipc.KeyManager, s.cfg.Manager)
}

func (s *Server) serveReload(ctx context.Context, req request) *ipc.Message {
	s.cfg.Reload(ctx)
	return ok()
}
