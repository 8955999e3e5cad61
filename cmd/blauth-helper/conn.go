package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/blauth/blauth/ipc"
)

// Time budgets of one call, by what the daemon may have to do to answer it.
const (
	dialTimeout = 2 * time.Second
	// getTimeout allows for a get that waits on the token endpoint (ipc.GetBudget) and the
	// request's own reading and writing.
	getTimeout    = ipc.GetBudget + 5*time.Second
	simpleTimeout = 10 * time.Second
)

// requestError is a request the helper refuses to send: what the caller gave cannot be carried
// faithfully, and sending less would resolve another workspace's credential.
type requestError struct{ msg, hint string }

func (e *requestError) Error() string { return e.msg }

// request builds a request that resolves a credential (ipc.Caller): it carries the caller's
// directory and BL_* variables, which the daemon reads as the caller's .env and environment
// sources.
func (a *app) request(action, workspace string) (*ipc.Message, error) {
	wd, err := a.getwd()
	if err != nil {
		return nil, &requestError{fmt.Sprintf("cannot tell the working directory (%v), where a project's .env would be read", err), "cd to an existing directory"}
	}
	c := ipc.Caller{Workspace: workspace, Dir: wd, Environ: a.environ()}
	if a.minTTL != "" {
		n, _ := strconv.Atoi(a.minTTL) // globalFlags checked it
		c.MinTTL = time.Duration(n) * time.Second
	}
	m, err := c.Request(action)
	var re *ipc.RequestError
	if errors.As(err, &re) {
		return nil, &requestError{re.Message, re.Hint}
	}
	return m, err
}

// call sends one request on a new connection, starting a daemon first if none answers and spawn
// allows it (see dial).
func (a *app) call(req *ipc.Message, timeout time.Duration, spawn bool) (*ipc.Message, error) {
	c, err := a.dial(spawn)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return do(c, req, timeout)
}

// do sends req on c. A daemon older than this helper refuses a version it does not speak: the
// request is sent again as version 1, which every daemon speaks.
func do(c *ipc.Client, req *ipc.Message, timeout time.Duration) (*ipc.Message, error) {
	resp, err := c.DoTimeout(req, timeout)
	if ipc.ErrorCode(err) == ipc.CodeUnsupportedVersion && req.Value(ipc.KeyVersion) != "1" {
		req.Set(ipc.KeyVersion, "1")
		resp, err = c.DoTimeout(req, timeout)
	}
	return resp, err
}

// dial connects to the daemon. When none answers and spawn allows it (and BLAUTH_NO_SPAWN does
// not forbid it), it starts one and says so on stderr, once.
func (a *app) dial(spawn bool) (*ipc.Client, error) {
	c, err := ipc.Dial(a.socket, dialTimeout)
	if err == nil || !errors.Is(err, ipc.ErrUnreachable) || !spawn || a.noSpawn() {
		return c, err
	}
	var logStart int64 // where the log ends now: the new daemon writes after it
	if fi, err := os.Stat(a.logPath()); err == nil {
		logStart = fi.Size()
	}
	pid, serr := a.startDaemon(a.socket)
	if serr != nil {
		return nil, fmt.Errorf("%w; starting one failed: %v", err, serr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for wait := 2 * time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		c, err = ipc.Dial(a.socket, dialTimeout)
		if err == nil {
			fmt.Fprintf(a.stderr, "blauth: started blauthd (pid %d) on %s; it logs to %s; stop it with 'blauth-helper stop'\n", pid, a.socket, a.logPath())
			return c, nil
		}
		if !errors.Is(err, ipc.ErrUnreachable) || time.Now().After(deadline) {
			return nil, fmt.Errorf("%w (a blauthd was started, pid %d, see %s)", err, pid, a.logPath())
		}
		// A daemon that refused its settings (a mistake in blauth's config file, say) has said
		// why in its log and exited: tell that now rather than wait out the deadline. One that
		// lost the race to another starting daemon says nothing there, and the wait goes on.
		if !running(pid) {
			if why := startRefusal(a.logPath(), logStart); why != "" {
				return nil, fmt.Errorf("%w: %w", ipc.ErrUnreachable, &refusedStart{pid, why})
			}
		}
		time.Sleep(wait)
	}
}

// refusedStart is a daemon the helper started that exited at once, refusing its settings.
type refusedStart struct {
	pid int
	why string // its error line, without "blauthd: error: "
}

func (e *refusedStart) Error() string {
	return fmt.Sprintf("the blauthd started for this command (pid %d) refused to run: %s", e.pid, e.why)
}

// maxRefusalRead bounds what startRefusal reads of the log: a refusal is a few lines.
const maxRefusalRead = 16 << 10

// startRefusal returns the last "blauthd: error: " line that a daemon wrote to log after offset
// (where the log ended when it was started), without that prefix, or "".
func startRefusal(log string, offset int64) string {
	f, err := os.Open(log)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, offset, maxRefusalRead))
	if err != nil {
		return ""
	}
	why := ""
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "blauthd: error: "); ok && ipc.ValidValue(rest) {
			why = ipc.Clip(rest, 600)
		}
	}
	return why
}

// noSpawn reports whether BLAUTH_NO_SPAWN forbids starting a daemon: any value but "", "0" and
// "false", so that BLAUTH_NO_SPAWN=true does what it says.
func (a *app) noSpawn() bool {
	switch a.getenv("BLAUTH_NO_SPAWN") {
	case "", "0", "false":
		return false
	}
	return true
}

// positionalWorkspace reads a command's optional WORKSPACE argument, which must agree with -w.
func (a *app) positionalWorkspace(args []string) (string, error) {
	ws := a.workspace
	switch len(args) {
	case 0:
	case 1:
		if strings.HasPrefix(args[0], "-") {
			return "", errors.New(unknownFlag(args[0], globalOptions))
		}
		if ws != "" && ws != args[0] {
			return "", errors.New("two different workspaces given")
		}
		ws = args[0]
	default:
		return "", fmt.Errorf("unexpected argument %q", args[1])
	}
	if !ipc.ValidValue(ws) {
		return "", errors.New("the workspace name holds a line break")
	}
	return ws, nil
}

// token asks the daemon for workspace's token ("" for the caller's default).
func (a *app) token(workspace string) (*ipc.Token, error) {
	req, err := a.request(ipc.ActionGet, workspace)
	if err != nil {
		return nil, err
	}
	resp, err := a.call(req, getTimeout, true)
	if err != nil {
		return nil, err
	}
	return ipc.ParseToken(resp)
}
