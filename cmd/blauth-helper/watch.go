package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/blauth/blauth/ipc"
)

// errOutputGone reports that whoever read the watch's output closed it.
var errOutputGone = errors.New("the output was closed")

// cmdWatch prints a line for the current token and one for each new token, until interrupted:
// the token alone, or with --json a JSON object per line. An error the daemon reports (a
// refused credential, no token for now) goes to stderr and the watch goes on; when the daemon
// goes away, the helper reconnects with backoff, as a long-running client should.
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
	said := "" // the last problem reported, so that a reconnect loop does not repeat it
	for wait := time.Duration(0); ; {
		err := a.watchOnce(req, func(m *ipc.Message) error {
			if e := ipc.AsError(m); e != nil {
				if e.Error() != said {
					said = e.Error()
					a.printError(e.Error(), hintOf(e))
				}
				return nil
			}
			said = ""
			wait = 0
			t, err := ipc.ParseToken(m)
			if err != nil {
				return err
			}
			return printWatched(out, t, asJSON)
		}, ctx.Done())
		switch {
		case ctx.Err() != nil, errors.Is(err, errOutputGone):
			return exitOK
		case ipc.ErrorCode(err) == ipc.CodeUnknownAction:
			return a.fail(errors.New("this blauthd is older than watch (protocol version 2): restart it, e.g. 'blauth-helper stop'"))
		case err != nil && err.Error() != said:
			said = err.Error()
			fmt.Fprintf(a.stderr, "blauth: %v; reconnecting\n", err)
		}
		wait = min(max(2*wait, 250*time.Millisecond), 10*time.Second)
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(wait):
		}
	}
}

// watchOnce follows one watch stream, handing each message to each, until the stream ends,
// each fails, or done is closed.
func (a *app) watchOnce(req *ipc.Message, each func(*ipc.Message) error, done <-chan struct{}) error {
	c, err := a.dial(true)
	if err != nil {
		return err
	}
	s, err := c.Watch(req)
	if err != nil {
		c.Close()
		return err
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-done:
		case <-stopped:
		}
		s.Close()
	}()
	for first := true; ; first = false {
		m, err := s.Next()
		if err != nil {
			return err
		}
		switch code := ipc.ErrorCode(ipc.AsError(m)); {
		case first && (code == ipc.CodeUnknownAction || code == ipc.CodeUnsupportedVersion):
			return ipc.AsError(m)
		case code == ipc.CodeShuttingDown:
			return errors.New("blauthd is stopping")
		}
		if err := each(m); err != nil {
			return err
		}
	}
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
		v := struct {
			Workspace string `json:"workspace"`
			Token     string `json:"token"`
			Kind      string `json:"kind"`
			Source    string `json:"source"`
			Expiry    *int64 `json:"expiry"`
		}{Workspace: t.Workspace, Token: t.Token, Kind: t.Kind, Source: t.Source}
		if !t.Expiry.IsZero() {
			exp := t.Expiry.Unix()
			v.Expiry = &exp
		}
		if err := json.NewEncoder(out).Encode(v); err != nil {
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
