package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/blauth/blauth/ipc"
)

// tokenFileEnv names exec --signal's token file in the command's environment.
const tokenFileEnv = "BLAUTH_TOKEN_FILE"

// execFollowFlags are the flags of exec that make it follow the token.
var execFollowFlags = []string{"--restart", "--grace", "--signal"}

// followedExec is what exec --restart or exec --signal was asked to run.
type followedExec struct {
	restart bool
	grace   time.Duration
	sig     syscall.Signal // 0 for --restart
	argv    []string
}

// parseFollowedExec reads exec's flags when one of them is --restart, --grace or --signal.
func parseFollowedExec(args []string) (*followedExec, error) {
	fe := &followedExec{grace: defaultGrace}
	graceSet := false
	args, err := commandFlags(args, []string{"--grace", "--signal"}, false, func(name, val string, hasVal bool) error {
		switch name {
		case "--restart":
			if hasVal {
				return errors.New("--restart takes no value")
			}
			fe.restart = true
		case "--grace":
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 {
				return fmt.Errorf("--grace takes a positive duration such as 10s or 500ms, not %q", val)
			}
			fe.grace, graceSet = d, true
		case "--signal":
			sig, ok := parseSignal(val)
			if !ok {
				return fmt.Errorf("unknown signal %q: --signal takes HUP, INT, QUIT, TERM, USR1, USR2, ALRM, WINCH, CONT or a number", val)
			}
			fe.sig = sig
		default:
			return errors.New(unknownFlag(name, append([]string{"--proxy"}, execFollowFlags...)))
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, err
	case fe.restart && fe.sig != 0:
		return nil, errors.New("--restart and --signal are two ways to give a command a new token: choose one")
	case !fe.restart && (fe.sig == 0 || graceSet):
		return nil, errors.New("--grace goes with --restart")
	case len(args) == 0:
		return nil, errors.New("exec needs a command: blauth-helper exec --restart [--grace DURATION] -- CMD [ARGS], or exec --signal SIG -- CMD [ARGS]")
	}
	fe.argv = args
	return fe, nil
}

// cmdExecFollow runs exec --restart and exec --signal: the command gets the token when it
// starts, and every new one while it runs, by a restart or by a file and a signal.
func (a *app) cmdExecFollow(args []string) int {
	fe, err := parseFollowedExec(args)
	if err != nil {
		return a.usageError(err.Error())
	}
	path, err := a.lookPath(fe.argv[0])
	if err != nil {
		a.printError(err.Error(), "")
		return 127
	}
	// Catch the signals to forward before anything runs, so that none is lost in between.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	t, err := a.token(a.workspace)
	if err == nil {
		err = ipc.DotenvConflict(t, false)
	}
	if err != nil {
		return a.fail(err)
	}
	a.warn(t.Hint)

	var tokenFile string
	if fe.sig != 0 {
		var code int
		if tokenFile, code = a.tokenFile(t); code != exitOK {
			return code
		}
		defer os.RemoveAll(filepath.Dir(tokenFile))
	}
	envFor := func(t *ipc.Token) []string { return fe.env(a.environ(), t, tokenFile) }
	c, err := a.startChild(path, fe.argv, envFor(t), a.stdin)
	if err != nil {
		a.printError(fmt.Sprintf("exec %s: %v", fe.argv[0], err), "")
		return 126
	}
	defer func() { c.stop(fe.grace) }() // c may be nil: stop skips it

	f := a.startFollowing(t.Workspace, t.Token)
	defer f.stop()
	followed := f.done // nil once the follower has ended
	expiry := expiryTimer(t)
	for {
		select {
		case s := <-sigs:
			c.signal(s.(syscall.Signal))
		case <-c.done:
			return c.status()
		case <-followed:
			followed = nil
			if f.err != nil {
				a.printError(f.err.Error(), oldDaemonHint)
				return exitError
			}
		case <-expiry.C:
			// No new token came before this one expired: the file must not hold it.
			if fe.sig != 0 {
				_ = writeFileAtomic(tokenFile, nil)
			}
		case nt := <-f.latest:
			expiry.Stop()
			t, expiry = nt, expiryTimer(nt)
			if fe.sig != 0 {
				if err := writeFileAtomic(tokenFile, []byte(t.Token+"\n")); err != nil {
					a.printError(fmt.Sprintf("write the token file: %v", err), "the command keeps the token it has")
				} else {
					c.signal(fe.sig)
				}
				continue
			}
			c.stop(fe.grace)
			if c, err = a.startChild(path, fe.argv, envFor(t), a.stdin); err != nil {
				a.printError(fmt.Sprintf("exec %s: %v", fe.argv[0], err), "")
				return 126
			}
		}
	}
}

// env is the command's environment with t: BL_API_KEY under --restart, BLAUTH_TOKEN_FILE
// under --signal; BL_WORKSPACE in both.
func (fe *followedExec) env(environ []string, t *ipc.Token, tokenFile string) []string {
	if fe.sig != 0 {
		return withEnv(environ, "BL_WORKSPACE", t.Workspace, tokenFileEnv, tokenFile)
	}
	return withEnv(environ, "BL_WORKSPACE", t.Workspace, "BL_API_KEY", t.Token)
}

// tokenFile makes exec --signal's directory, which only this user can open, under
// $XDG_RUNTIME_DIR (else the system's temporary directory), and writes t into its file "token",
// whose path it returns.
func (a *app) tokenFile(t *ipc.Token) (path string, code int) {
	base := ipc.DefaultRuntimeDir(a.getenv)
	if fi, err := os.Stat(base); base == "" || err != nil || !fi.IsDir() {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "blauth-exec-")
	if err != nil {
		a.printError(fmt.Sprintf("cannot make a private directory for the token file: %v", err), "set XDG_RUNTIME_DIR to a directory of yours (0700)")
		return "", exitError
	}
	path = filepath.Join(dir, "token")
	if err := writeFileAtomic(path, []byte(t.Token+"\n")); err != nil {
		os.RemoveAll(dir)
		a.printError(fmt.Sprintf("write the token file: %v", err), "")
		return "", exitError
	}
	return path, exitOK
}

// expiryTimer fires when t expires; never for a token without an expiry (an API key).
func expiryTimer(t *ipc.Token) *time.Timer {
	if t.Expiry.IsZero() {
		never := time.NewTimer(time.Hour)
		never.Stop()
		return never
	}
	return time.NewTimer(time.Until(t.Expiry))
}
