// Package blauth gives Go programs the Blaxel tokens that blauthd holds: one token now (Token),
// or a golang.org/x/oauth2 TokenSource that follows the daemon's watch stream (NewTokenSource),
// so that every long-running process of a user shares the daemon's one token per credential,
// refreshed for all of them at once, and never sends an expired one.
//
// The package talks to the daemon over its Unix socket (docs/PROTOCOL.md) with package ipc; it
// imports nothing else but golang.org/x/oauth2 and the standard library. It never logs, and no
// error it returns holds a token.
//
// Blaxel's API wants the token in X-Blaxel-Authorization and the workspace in
// X-Blaxel-Workspace: Transport and NewClient set both. oauth2.NewClient works too (the API
// also accepts Authorization: Bearer), but it sets no workspace header and keeps each token
// until ten seconds before it expires instead of taking every refresh at once.
package blauth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/oauth2"

	"github.com/blauth/blauth/ipc"
)

// DefaultMinTTL is the least life left that a token returned by this package has when
// Options.MinTTL is zero: the daemon's own default minimum (blauthd --min-ttl).
const DefaultMinTTL = 30 * time.Second

// DefaultWait is how long TokenSource.Token waits for the daemon's next token when the latest
// one has less than the minimum life left, when Options.Wait is zero.
const DefaultWait = 5 * time.Second

// DefaultTimeout bounds connecting to the daemon and its first answer when Options.Timeout is
// zero: a daemon that has to ask the token endpoint first answers within ipc.GetBudget.
const DefaultTimeout = ipc.GetBudget + 5*time.Second

// dialTimeout bounds connecting to the socket itself.
const dialTimeout = 2 * time.Second

// Error is an error answer from the daemon: branch on its Code (the Code constants), never on
// its Message. Errors returned by this package wrap it; ErrorCode reads it.
type Error = ipc.Error

// The codes a client branches on; docs/PROTOCOL.md lists them all. A code this package does
// not name counts as CodeInternal.
const (
	CodeNoWorkspace   = ipc.CodeNoWorkspace   // no workspace asked for and none configured
	CodeNoCredentials = ipc.CodeNoCredentials // the workspace has no credential in any source
	CodeAuthFailed    = ipc.CodeAuthFailed    // the token endpoint refused the credential for good
	CodeUnavailable   = ipc.CodeUnavailable   // no token with enough life left now; retry later
	CodeBadRequest    = ipc.CodeBadRequest
	CodeUnknownAction = ipc.CodeUnknownAction // the daemon is older than watch (protocol 2)
	CodeShuttingDown  = ipc.CodeShuttingDown
	CodeBusy          = ipc.CodeBusy
	CodeInternal      = ipc.CodeInternal
)

// ErrUnreachable is wrapped by the errors that mean no daemon answers on the socket (it does
// not exist, or nobody listens): start one (systemctl --user start blauthd.socket, or run
// blauth-helper once, which starts one on demand).
var ErrUnreachable = ipc.ErrUnreachable

// ErrClosed is returned by TokenSource.Token after Close, or once the context given to
// NewTokenSource is done.
var ErrClosed = errors.New("blauth: the token source is closed")

// ErrorCode returns the daemon's error code carried by err ("" when it carries none).
func ErrorCode(err error) string { return ipc.ErrorCode(err) }

// Options select the token and the daemon. The zero value asks the default daemon for the
// default workspace of this process (its BL_* variables and its directory's .env count, as
// for Blaxel's SDKs).
type Options struct {
	// Workspace is the workspace to serve; empty lets the daemon choose, as Blaxel's SDKs would
	// (BL_WORKSPACE of the .env, of Env, of the daemon's environment, then bl's current one).
	Workspace string
	// MinTTL is the least life a token this package returns has left. Zero means DefaultMinTTL;
	// a value is sent to the daemon in whole seconds, rounded up.
	MinTTL time.Duration
	// Socket is the daemon's socket; empty means ipc.DefaultSocketPath() ($BLAUTH_SOCKET, else
	// $XDG_RUNTIME_DIR/blauth/blauthd.sock, …).
	Socket string
	// Dir is the directory whose .env the daemon reads for this caller; empty means the working
	// directory. It must be absolute.
	Dir string
	// Env is the environment whose BL_* variables are sent for the daemon to resolve with; nil
	// means os.Environ(), an empty non-nil slice none. A BL_* variable that cannot be sent (a
	// line break in its value) is an error, never dropped: without it the daemon would resolve
	// another workspace's credential.
	Env []string
	// Wait is how long TokenSource.Token waits for a newer token when the latest has less than
	// MinTTL left (DefaultWait when zero).
	Wait time.Duration
	// Timeout bounds a connection to the daemon and its first answer (DefaultTimeout when zero).
	Timeout time.Duration
}

// settings are Options with the defaults filled in and the request built.
type settings struct {
	socket  string
	minTTL  time.Duration
	wait    time.Duration
	timeout time.Duration
	// workspace is what was asked for ("" for the default), for messages.
	workspace string
}

func (s *settings) what() string {
	if s.workspace == "" {
		return "the default workspace"
	}
	return "workspace " + s.workspace
}

// resolve checks o, fills the defaults and builds the request for action.
func (o Options) resolve(action string) (*settings, *ipc.Message, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("blauth: %w", &Error{Code: CodeBadRequest, Message: fmt.Sprintf(format, a...)})
	}
	switch {
	case o.MinTTL < 0:
		return nil, nil, bad("MinTTL is %s; it must not be negative", o.MinTTL)
	case o.Wait < 0:
		return nil, nil, bad("Wait is %s; it must not be negative", o.Wait)
	case o.Timeout < 0:
		return nil, nil, bad("Timeout is %s; it must not be negative", o.Timeout)
	}
	s := &settings{socket: cmp.Or(o.Socket, ipc.DefaultSocketPath()), minTTL: cmp.Or(o.MinTTL, DefaultMinTTL),
		wait: cmp.Or(o.Wait, DefaultWait), timeout: cmp.Or(o.Timeout, DefaultTimeout), workspace: o.Workspace}
	dir := o.Dir
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, nil, fmt.Errorf("blauth: cannot tell the working directory, where a project's .env would be read: %w", err)
		}
		dir = wd
	}
	environ := o.Env
	if environ == nil {
		environ = os.Environ()
	}
	req, err := ipc.Caller{Workspace: o.Workspace, Dir: dir, Environ: environ, MinTTL: o.MinTTL}.Request(action)
	var re *ipc.RequestError
	if errors.As(err, &re) {
		return nil, nil, fmt.Errorf("blauth: %w", &Error{Code: CodeBadRequest, Message: re.Message, Hint: re.Hint})
	}
	if err != nil {
		return nil, nil, err
	}
	return s, req, nil
}

// Token asks the daemon for one token with at least Options.MinTTL of life left (a get).
// ctx bounds the call, as does Options.Timeout. An error answer is returned as an error
// wrapping an *Error; no daemon on the socket, as an error wrapping ErrUnreachable.
//
// The token carries the workspace it belongs to: TokenWorkspace reads it.
func Token(ctx context.Context, opts Options) (*oauth2.Token, error) {
	s, req, err := opts.resolve(ipc.ActionGet)
	if err != nil {
		return nil, err
	}
	c, err := ipc.Dial(s.socket, min(dialTimeout, s.timeout))
	if err != nil {
		return nil, fmt.Errorf("blauth: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	resp, err := c.DoTimeout(req, s.timeout)
	if ipc.ErrorCode(err) == ipc.CodeUnsupportedVersion {
		// A daemon of protocol version 1, not restarted since an upgrade: get is the same there.
		req.Set(ipc.KeyVersion, "1")
		resp, err = c.DoTimeout(req, s.timeout)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("blauth: get a token for %s: %w", s.what(), context.Cause(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("blauth: get a token for %s: %w", s.what(), err)
	}
	t, err := ipc.ParseToken(resp)
	if err != nil {
		return nil, fmt.Errorf("blauth: get a token for %s: %w", s.what(), err)
	}
	if err := s.check(t, time.Now()); err != nil {
		return nil, err
	}
	return oauthToken(t), nil
}

// check returns an error when t has less than the minimum life left at now.
func (s *settings) check(t *ipc.Token, now time.Time) error {
	if t.Expiry.IsZero() || t.Expiry.Sub(now) >= s.minTTL {
		return nil
	}
	return fmt.Errorf("blauth: %w", &Error{Code: CodeUnavailable,
		Message: fmt.Sprintf("the token for workspace %s has %s of life left, under the %s asked for", t.Workspace, max(t.Expiry.Sub(now), 0).Round(time.Second), s.minTTL),
		Hint:    "check that blauthd runs and can reach the token endpoint ('blauth-helper status')"})
}

// extraWorkspace and the other keys of the oauth2.Token extras this package sets.
const (
	extraWorkspace = "workspace"
	extraKind      = "kind"
	extraSource    = "source"
	extraHint      = "hint"
)

// oauthToken converts a daemon answer. The extras carry the workspace, kind, source and hint.
func oauthToken(t *ipc.Token) *oauth2.Token {
	ot := &oauth2.Token{AccessToken: t.Token, TokenType: "Bearer", Expiry: t.Expiry}
	extra := map[string]any{extraWorkspace: t.Workspace, extraKind: t.Kind, extraSource: t.Source}
	if t.Hint != "" {
		extra[extraHint] = t.Hint
	}
	return ot.WithExtra(extra)
}

// TokenWorkspace returns the workspace a token of this package belongs to (its
// X-Blaxel-Workspace), or "" for a token from elsewhere.
func TokenWorkspace(t *oauth2.Token) string {
	if t == nil {
		return ""
	}
	s, _ := t.Extra(extraWorkspace).(string)
	return s
}
