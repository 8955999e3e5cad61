package main

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/blauth/blauth/ipc"
)

// cmdGit speaks git's credential helper protocol: attributes on stdin, an answer on stdout.
func (a *app) cmdGit(args []string) int {
	in, err := readGitInput(a.stdin)
	if err != nil {
		return a.fail(err)
	}
	ws := cmp.Or(a.workspace, in.Value("username")) // https://WORKSPACE@host/… sends username=WORKSPACE
	switch a.cmd {
	case "store":
		// git stores what a helper gave it; the daemon already holds it.
		return exitOK
	case "erase":
		return a.gitErase(ws, in)
	}
	return a.printToken(ws, func(t *ipc.Token) ([]byte, error) { return gitAnswer(t, in) })
}

// gitErase drops the daemon's cached token after git saw it rejected.
func (a *app) gitErase(ws string, in *ipc.Message) int {
	req, err := a.request(ipc.ActionErase, ws)
	if err != nil {
		return a.fail(err)
	}
	if p := in.Value("password"); p != "" {
		req.Add(ipc.KeyToken, p)
	} else if c := in.Value("credential"); c != "" {
		req.Add(ipc.KeyToken, c)
	}
	// No daemon means no cached token: there is nothing to erase, and no reason to start one.
	// (Only the dial's error says ErrUnreachable.)
	if _, err := a.call(req, simpleTimeout, false); err != nil && !errors.Is(err, ipc.ErrUnreachable) {
		return a.fail(err)
	}
	return exitOK
}

// gitAnswer is the get answer for git: username, password, the expiry when the token has one,
// and the bearer credential when git announced capability[]=authtype. It refuses a token or
// workspace holding CR, LF or NUL, which would let it forge attributes (such as host=).
func gitAnswer(t *ipc.Token, in *ipc.Message) ([]byte, error) {
	out := &ipc.Message{}
	out.Add("username", t.Workspace)
	out.Add("password", t.Token)
	if !t.Expiry.IsZero() {
		out.Add("password_expiry_utc", strconv.FormatInt(t.Expiry.Unix(), 10))
	}
	for _, c := range in.All("capability[]") {
		if c == "authtype" {
			out.Add("capability[]", "authtype")
			out.Add("authtype", "Bearer")
			out.Add("credential", t.Token)
			out.Add("ephemeral", "true")
		}
	}
	b, err := out.Encode()
	if err != nil {
		return nil, errors.New("the token or workspace holds CR, LF or NUL; refusing to pass it to git")
	}
	return b[:len(b)-1], nil // git wants no trailing blank line
}

// readGitInput reads git's attributes: key=value lines up to a blank line or the end.
func readGitInput(r io.Reader) (*ipc.Message, error) {
	m := &ipc.Message{}
	sc := bufio.NewScanner(io.LimitReader(r, ipc.MaxMessageSize))
	sc.Buffer(make([]byte, 4096), ipc.MaxLineSize)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("git sent a line without '='")
		}
		if !ipc.ValidValue(v) {
			return nil, fmt.Errorf("git sent a value of %s holding CR or NUL", k)
		}
		m.Add(k, v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read git's input: %w", err)
	}
	return m, nil
}
