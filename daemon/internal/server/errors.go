package server

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/blauth/blauth/daemon/internal/broker"
	"github.com/blauth/blauth/daemon/internal/login"
	"github.com/blauth/blauth/daemon/internal/resolver"
	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources/keyring"
)

// errorAnswer is the one place an error from the broker, the keyring, a device login or the
// token endpoint becomes a protocol code, a message and a hint for the user.
func errorAnswer(err error) *ipc.Message {
	var be *broker.Error
	var te *token.Error
	msg := err.Error()
	switch {
	case errors.Is(err, token.ErrBadURL):
		// Before the broker's reasons: a URL that cannot be used is a configuration error, not
		// a refused credential.
		return fail(ipc.CodeBadRequest, msg, "fix the URL named (BL_API_URL, --token-url or --oidc-issuer): an absolute http or https URL")
	case errors.As(err, &be):
		return brokerError(be)
	case errors.Is(err, keyring.ErrNotFound):
		return fail(ipc.CodeNoCredentials, msg, "blauth-helper status shows where each workspace's credential comes from")
	case errors.Is(err, keyring.ErrUnavailable):
		return fail(ipc.CodeKeyringUnavailable, msg, "unlock the keyring (a Secret Service such as gnome-keyring must be running), or use BL_API_KEY / bl login instead")
	case errors.Is(err, keyring.ErrInvalid), errors.Is(err, login.ErrUnknownFlow):
		return fail(ipc.CodeBadRequest, msg, "")
	case errors.Is(err, login.ErrPending):
		return fail(ipc.CodeLoginPending, msg, "")
	case errors.Is(err, login.ErrTooMany):
		return fail(ipc.CodeUnavailable, msg, "finish or interrupt one of them")
	case errors.Is(err, login.ErrEnded):
		return fail(ipc.CodeLoginExpired, msg, "")
	case errors.Is(err, login.ErrNotSaved):
		return fail(ipc.CodeInternal, msg, "")
	case errors.Is(err, token.ErrDeviceExpired), token.IsPermanent(err):
		return fail(ipc.CodeLoginExpired, msg, "run blauth-helper login again")
	case errors.As(err, &te):
		return fail(ipc.CodeUnavailable, msg, "check your network and BL_API_URL / BL_ENV")
	}
	return fail(ipc.CodeInternal, msg, "")
}

// brokerError says why the broker served no token, and what the user can do.
func brokerError(e *broker.Error) *ipc.Message {
	switch e.Reason {
	case broker.Refused:
		hint := "check the service account's client id and secret, or create a new secret in the Blaxel console"
		if e.Kind == ipc.KindLogin {
			hint = "run `bl login " + e.Workspace + "` (or `blauth-helper login " + e.Workspace + "`)"
		}
		return fail(ipc.CodeAuthFailed, e.Error(), hint)
	case broker.TooShort:
		if e.Skew != 0 {
			return fail(ipc.CodeUnavailable, e.Error(), "check this machine's clock against the token endpoint's (blauth-helper status shows the skew): its tokens arrive with less life left than they are issued for")
		}
		return fail(ipc.CodeUnavailable, e.Error(), "ask for a shorter min_ttl; the token endpoint issues shorter tokens")
	case broker.Unmeetable:
		return fail(ipc.CodeUnavailable, e.Error(), fmt.Sprintf("ask for a min_ttl of at most %s (blauthd's own --min-ttl counts too)", e.Limit))
	case broker.GaveUp:
		return fail(ipc.CodeUnavailable, e.Error(), "")
	}
	hint := "the token endpoint could not be reached; blauthd keeps retrying"
	if e.RetryIn > 0 {
		hint += fmt.Sprintf(", next try in %s", e.RetryIn.Round(time.Second))
	}
	return fail(ipc.CodeUnavailable, e.Error(), hint)
}

// resolutionError answers a resolution that found nothing to serve. A missing credential is
// often a mistake the daemon can name: a misspelt workspace (did you mean one the sources know?),
// a misspelt key in the bl config, a source that could not be read (a broken bl config hides its
// workspaces); each is named, the request's own sources' (its .env) and the daemon's alike.
func (s *Server) resolutionError(res *resolver.Resolution, err error) *ipc.Message {
	msg := err.Error()
	var hint, code string
	if res == nil {
		res = &resolver.Resolution{}
	}
	switch {
	case errors.Is(err, resolver.ErrSource):
		return fail(ipc.CodeBadSource, msg, "blauthd never falls back to another source while the caller's own cannot be read: fix the file, or run from another directory")
	case errors.Is(err, resolver.ErrNoWorkspace):
		code, hint = ipc.CodeNoWorkspace, "pass a workspace (-w NAME), set BL_WORKSPACE, or run `bl login WORKSPACE`"
	case errors.Is(err, resolver.ErrNoCredentials):
		code, hint = ipc.CodeNoCredentials, s.credentialWays(res.Workspace)
		if near := s.nearWorkspaces(res); len(near) > 0 {
			msg += "; did you mean " + strings.Join(near, " or ") + "?"
		}
		for i, w := range res.Warnings {
			if i == 2 {
				msg += fmt.Sprintf("; and %d more such keys (blauth-helper status lists them)", len(res.Warnings)-i)
				break
			}
			msg += "; " + w
		}
		if len(res.Warnings) > 0 {
			hint = "rename the key as said above (blauthd reads the change at once); or " + hint
		}
	default:
		return errorAnswer(err)
	}
	problems := slices.Concat(res.Errors, s.cfg.Resolver.SourceErrors())
	if len(problems) > 0 {
		var b strings.Builder
		for i, e := range problems {
			if i == 3 {
				fmt.Fprintf(&b, "; and %d more (blauth-helper status lists them)", len(problems)-i)
				break
			}
			if s.cfg.Scope != nil {
				// A scoped socket's peer learns the kind, not the path nor the reason (which
				// quotes paths): the daemon's own user sees both in blauth-helper status.
				fmt.Fprintf(&b, "; the %s source could not be used", e.Source.Kind)
				continue
			}
			fmt.Fprintf(&b, "; %s %s could not be used: %s", e.Source.Kind, e.Source.Where, e.Error)
		}
		msg += b.String()
		if s.cfg.Scope != nil {
			hint += "; or ask the user of blauthd's machine: the source named above may hold what you expected, and blauth-helper status there says why it could not be used"
		} else {
			hint += "; or fix the source named above: it could not be read, and may hold what you expected"
		}
	}
	return fail(code, msg, hint)
}

// credentialWays is the hint for a workspace without a credential: every way to give it one,
// the keyring's only when the daemon uses it.
func (s *Server) credentialWays(ws string) string {
	ws = ipc.Clip(ws, 100)
	if ws == "" {
		ws = "WORKSPACE"
	}
	h := fmt.Sprintf("give %s a credential: run `bl login %s` (or `blauth-helper login %s`), or set BL_API_KEY or BL_CLIENT_CREDENTIALS in the environment or in a .env in the project's directory", ws, ws, ws)
	if s.cfg.Keyring != nil {
		h += fmt.Sprintf(", or keep an API key in the OS keyring with `blauth-helper login %s --api-key`", ws)
	}
	return h
}

// nearWorkspaces are the workspaces the request probably meant when it named one no source
// knows: the closest by edit distance among those its sources name and those the daemon holds,
// on a scoped socket among the scope's only (a peer there may not learn the others' names).
func (s *Server) nearWorkspaces(res *resolver.Resolution) []string {
	var known []string
	for _, w := range append(s.cfg.Resolver.Workspaces(), res.Named...) {
		if s.cfg.Scope == nil || s.cfg.Scope.Workspaces[w] {
			known = append(known, w)
		}
	}
	if res.Workspace == "" || slices.Contains(known, res.Workspace) {
		return nil // a workspace the sources know, without a credential: not a typo
	}
	near := ipc.Nearest(res.Workspace, known)
	return near[:min(len(near), 3)]
}
