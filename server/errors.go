package server

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/blauth/blauth/broker"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/login"
	"github.com/blauth/blauth/resolver"
	"github.com/blauth/blauth/sources"
	"github.com/blauth/blauth/token"
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
	case errors.Is(err, sources.ErrKeyringNotFound):
		return fail(ipc.CodeNoCredentials, msg, "blauth-helper status shows where each workspace's credential comes from")
	case errors.Is(err, sources.ErrKeyringUnavailable):
		return fail(ipc.CodeKeyringUnavailable, msg, "unlock the keyring (a Secret Service such as gnome-keyring must be running), or use BL_API_KEY / bl login instead")
	case errors.Is(err, sources.ErrKeyringInvalid), errors.Is(err, login.ErrUnknownFlow):
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
		return fail(ipc.CodeUnavailable, e.Error(), "ask for a shorter min_ttl; the token endpoint issues shorter tokens")
	case broker.Unmeetable:
		return fail(ipc.CodeUnavailable, e.Error(), fmt.Sprintf("ask for a min_ttl under %s (blauthd's own --min-ttl counts too)", e.Lifetime))
	case broker.GaveUp:
		return fail(ipc.CodeUnavailable, e.Error(), "")
	}
	hint := "the token endpoint could not be reached; blauthd keeps retrying"
	if e.RetryIn > 0 {
		hint += fmt.Sprintf(", next try in %s", e.RetryIn.Round(time.Second))
	}
	return fail(ipc.CodeUnavailable, e.Error(), hint)
}

// resolutionError answers a resolution that found nothing to serve. A source that could not be
// read is often the cause (a broken bl config hides its workspaces), so each is named: the
// request's own (its .env) and the daemon's (the bl config, the keyring, the file watcher).
func (s *Server) resolutionError(res *resolver.Resolution, err error) *ipc.Message {
	msg := err.Error()
	var hint, code string
	switch {
	case errors.Is(err, resolver.ErrSource):
		return fail(ipc.CodeBadSource, msg, "blauthd never falls back to another source while the caller's own cannot be read: fix the file, or run from another directory")
	case errors.Is(err, resolver.ErrNoWorkspace):
		code, hint = ipc.CodeNoWorkspace, "pass a workspace (-w NAME), set BL_WORKSPACE, or run `bl login`"
	case errors.Is(err, resolver.ErrNoCredentials):
		code, hint = ipc.CodeNoCredentials, "set BL_API_KEY or BL_CLIENT_CREDENTIALS, run `bl login WORKSPACE`, or `blauth-helper login WORKSPACE --api-key`"
	default:
		return errorAnswer(err)
	}
	var problems []sources.SourceError
	if res != nil {
		problems = res.Errors
	}
	problems = append(problems, s.cfg.Resolver.SourceErrors()...)
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
		hint = "fix the source named above (it may hold what you expected), or " + hint
		if s.cfg.Scope != nil {
			hint = "the source named above, on blauthd's machine, may hold what you expected: its user sees why in blauth-helper status there; or " + hint
		}
	}
	return fail(code, msg, hint)
}
