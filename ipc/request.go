package ipc

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"time"
)

// RequestError is a request a client must not send: what its caller gave cannot be carried
// faithfully, and sending less would resolve another workspace's credential. Hint says what
// the user can do. It never holds a variable's value, which may be a secret.
type RequestError struct{ Message, Hint string }

func (e *RequestError) Error() string { return e.Message }

// Caller is what a get or watch request carries for the daemon to resolve the credential this
// caller would get: its workspace, its directory (its .env counts), its BL_* variables, and
// the least life the token must have.
type Caller struct {
	Workspace string        // "" for the default the daemon resolves
	Dir       string        // the caller's working directory, absolute; "" sends none
	Environ   []string      // as os.Environ gives it: its BL_* variables are sent
	MinTTL    time.Duration // sent in whole seconds, rounded up; 0 sends none
}

// Request builds the request of action (ActionGet or ActionWatch) for c, with every limit the
// daemon checks: a workspace or directory holding CR, LF or NUL, a relative directory or one
// over MaxCwd bytes, a BL_* variable that cannot be sent (EnvError) and a negative MinTTL are
// a *RequestError, and nothing is dropped.
func (c Caller) Request(action string) (*Message, error) {
	m := NewMessage(KeyVersion, Version, KeyAction, action)
	if c.Workspace != "" {
		if !ValidValue(c.Workspace) {
			return nil, &RequestError{"the workspace name holds a line break", "give the workspace's name as bl lists it"}
		}
		m.Add(KeyWorkspace, c.Workspace)
	}
	if c.Dir != "" {
		switch {
		case !ValidValue(c.Dir):
			return nil, &RequestError{fmt.Sprintf("the working directory %q holds a line break", c.Dir), "run from a directory whose path has no line break"}
		case len(c.Dir) > MaxCwd:
			return nil, &RequestError{fmt.Sprintf("the working directory is %d bytes long, over the %d blauthd accepts", len(c.Dir), MaxCwd), "run from a directory with a shorter path"}
		case !filepath.IsAbs(c.Dir):
			return nil, &RequestError{fmt.Sprintf("the directory %q is relative; blauthd needs an absolute path", c.Dir), "give the directory as an absolute path"}
		}
		m.Add(KeyDir, c.Dir)
	}
	env, err := CallerEnv(c.Environ)
	if err != nil {
		var ee *EnvError
		if !errors.As(err, &ee) {
			return nil, err
		}
		msg := err.Error()
		if ee.Reason == "a trailing carriage return" {
			msg += " (was it read from a file with CRLF line ends?)"
		}
		return nil, &RequestError{msg, "set " + ee.Name + " again without it, or unset it"}
	}
	m.Fields = append(m.Fields, env...)
	switch {
	case c.MinTTL < 0:
		return nil, &RequestError{fmt.Sprintf("the minimum life left asked for is %s; it must not be negative", c.MinTTL), ""}
	case c.MinTTL > 0:
		m.Add(KeyMinTTL, strconv.FormatInt(int64(math.Ceil(c.MinTTL.Seconds())), 10))
	}
	return m, nil
}
