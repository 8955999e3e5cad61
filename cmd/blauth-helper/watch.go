package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/blauth/blauth/ipc"
)

// errOutputGone reports that whoever read the watch's output closed it.
var errOutputGone = errors.New("the output was closed")

// cmdWatch prints a line for the current token and one for each new token, until interrupted:
// the token alone, or with --json a JSON object per line. An error the daemon reports (a
// refused credential, no token for now) goes to stderr and the watch goes on. It never starts
// a daemon: when none answers, or the one it follows stops, it says so once on stderr and waits
// for one to come back (socket activation, or the user's next command), as every follower does.
func (a *app) cmdWatch(args []string) int {
	asJSON, code := a.jsonFlag(args)
	if code != exitOK {
		return code
	}
	req, err := a.request(ipc.ActionWatch, a.workspace)
	if err != nil {
		return a.fail(err)
	}
	ctx, stop := signal.NotifyContext(a.ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	out := bufio.NewWriter(a.stdout)
	printEach := func(t *ipc.Token) error { return printWatched(out, t, asJSON) }
	switch err := a.follow(ctx, req, "watch never starts one: socket activation or the next blauth-helper command does", printEach); {
	case err == nil, errors.Is(err, errOutputGone):
		return exitOK
	case errors.Is(err, ipc.ErrOldDaemon):
		a.printError(err.Error(), oldDaemonHint)
		return exitError
	default:
		return a.fail(err)
	}
}

// follow runs a follower of req until ctx ends or took returns errOutputGone. It hands took
// each token; an error the daemon reports, or took's, is said once on stderr and the following
// goes on; a lost daemon is said once, with how the command waits for one.
func (a *app) follow(ctx context.Context, req *ipc.Message, waits string, took func(*ipc.Token) error) error {
	said := ""       // the last problem reported, so that it is not repeated
	waiting := false // the follower lost its daemon and no answer came since
	f := &ipc.Follower{Socket: a.socket, Request: req,
		Answer: func(m *ipc.Message) error {
			if waiting {
				waiting = false
				fmt.Fprintf(a.stderr, "blauth: blauthd answers again on %s\n", a.socket)
			}
			err := ipc.AsError(m)
			if err == nil {
				var t *ipc.Token
				if t, err = ipc.ParseToken(m); err == nil {
					err = took(t)
				}
			}
			switch {
			case err == nil:
				said = ""
			case errors.Is(err, errOutputGone):
				return err
			case err.Error() != said:
				said = err.Error()
				a.printError(err.Error(), hintOf(err))
			}
			return nil
		},
		Lost: func(err error) {
			if !waiting {
				waiting = true
				fmt.Fprintf(a.stderr, "blauth: %s; waiting for a daemon (%s)\n", a.lostReason(err), waits)
			}
		},
	}
	return f.Run(ctx)
}

// lostReason says, in words, why a watch has no daemon to follow.
func (a *app) lostReason(err error) string {
	switch {
	case ipc.ErrorCode(err) == ipc.CodeShuttingDown:
		return "blauthd stopped"
	case ipc.ErrorCode(err) == ipc.CodeBusy:
		return "blauthd is at its connection limit"
	case errors.Is(err, ipc.ErrUnreachable):
		return "no blauthd answers on " + a.socket
	}
	return err.Error()
}

// hintOf is the daemon's hint that err carries, if any.
func hintOf(err error) string {
	var e *ipc.Error
	if errors.As(err, &e) {
		return e.Hint
	}
	return ""
}

// printWatched writes one line for t and flushes it, so that a pipe reader sees it at once.
func printWatched(out *bufio.Writer, t *ipc.Token, asJSON bool) error {
	if !ipc.ValidValue(t.Token) || !ipc.ValidValue(t.Workspace) {
		return errors.New("the daemon sent a token holding CR, LF or NUL; refusing to print it")
	}
	if asJSON {
		if err := json.NewEncoder(out).Encode(tokenJSON(t)); err != nil {
			return errOutputGone
		}
	} else if _, err := io.WriteString(out, t.Token+"\n"); err != nil {
		return errOutputGone
	}
	if err := out.Flush(); err != nil {
		return errOutputGone
	}
	return nil
}

// watchedToken is the JSON object of watch --json and sink --format json.
type watchedToken struct {
	Workspace string `json:"workspace"`
	Token     string `json:"token"`
	Kind      string `json:"kind"`
	Source    string `json:"source"`
	Expiry    *int64 `json:"expiry"` // Unix seconds; null for a token without an expiry
}

func tokenJSON(t *ipc.Token) watchedToken {
	v := watchedToken{Workspace: t.Workspace, Token: t.Token, Kind: t.Kind, Source: t.Source}
	if !t.Expiry.IsZero() {
		exp := t.Expiry.Unix()
		v.Expiry = &exp
	}
	return v
}
