package main

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/blauth/blauth/ipc"
)

// keyringTimeout allows for the daemon's own time box on the OS keyring.
const keyringTimeout = 15 * time.Second

// cmdLogin stores a secret in the OS keyring (--api-key, --client-credentials) or runs Blaxel's
// device login, which saves the session in the bl config as bl login does.
func (a *app) cmdLogin(args []string) int {
	var ws, kind string
	for _, arg := range args {
		switch arg {
		case "--api-key":
			kind = ipc.KindAPIKey
		case "--client-credentials":
			kind = ipc.KindClientCredentials
		default:
			if strings.HasPrefix(arg, "-") || ws != "" {
				return a.usageError(fmt.Sprintf("unexpected argument %q", arg))
			}
			ws = arg
		}
	}
	if ws = cmp.Or(ws, a.workspace); ws == "" {
		return a.usageError("login needs a workspace: blauth-helper login WORKSPACE [--api-key | --client-credentials]")
	}
	if kind == "" {
		return a.deviceLogin(ws)
	}
	// Ask first: a secret typed or piped in for a daemon that cannot keep it would be lost.
	if err := a.keyringOn(ws); err != nil {
		return a.fail(err)
	}
	what := "API key"
	if kind == ipc.KindClientCredentials {
		what = "client credentials (base64 of id:secret, or id:secret)"
	}
	secret, err := readSecret(a.stdin, a.stderr, fmt.Sprintf("%s for %s: ", what, ws))
	if err != nil {
		return a.fail(err)
	}
	req := controlRequest(ipc.ActionKeyringSet, ipc.KeyWorkspace, ws, ipc.KeyKind, kind, ipc.KeySecret, secret)
	if _, err := a.call(req, keyringTimeout, true); err != nil {
		return a.fail(err)
	}
	fmt.Fprintf(a.stderr, "blauth: saved the %s for %s in the OS keyring\n", what, ws)
	return exitOK
}

// keyringOn asks the daemon (starting one if none runs) whether it uses the OS keyring, and
// returns a keyring_unavailable error saying why not when it does not. A daemon too old to say
// is given the benefit of the doubt: keyring_set answers for it.
func (a *app) keyringOn(ws string) error {
	resp, err := a.call(controlRequest(ipc.ActionPing), simpleTimeout, true)
	if err != nil {
		return err
	}
	if resp.Value(ipc.KeyKeyring) != "off" {
		return nil
	}
	return &ipc.Error{Code: ipc.CodeKeyringUnavailable,
		Message: "the OS keyring is off in this blauthd: " + resp.Value(ipc.KeyKeyringOff) + "; nothing was read from standard input",
		Hint:    "keep the secret where bl and Blaxel's SDKs read it instead: BL_API_KEY or BL_CLIENT_CREDENTIALS in the environment or a project's .env, or log in with `blauth-helper login " + ws + "` (no flag: saved where bl saves it); docs/CONFIG.md says when the keyring is on"}
}

// readSecret reads one line from stdin; on a terminal it prompts and turns echo off.
func readSecret(stdin io.Reader, stderr io.Writer, prompt string) (string, error) {
	f, isFile := stdin.(*os.File)
	if isFile && isTerminal(f) {
		fmt.Fprint(stderr, prompt)
		if stty(f, "-echo") == nil {
			defer func() { _ = stty(f, "echo"); fmt.Fprintln(stderr) }()
		}
	}
	line, err := bufio.NewReaderSize(stdin, 4096).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("no secret on standard input")
	}
	s := strings.TrimSpace(line) // the line break too
	if s == "" {
		return "", errors.New("the secret is empty")
	}
	if !ipc.ValidValue(s) {
		return "", errors.New("the secret holds a control character")
	}
	return s, nil
}

// stty runs stty on the terminal (the standard library has no termios; stty is everywhere).
func stty(tty *os.File, arg string) error {
	cmd := exec.Command("stty", arg)
	cmd.Stdin = tty
	return cmd.Run()
}

func (a *app) cmdLogout(args []string) int {
	ws, err := a.positionalWorkspace(args)
	if err != nil || ws == "" {
		return a.usageError("logout needs a workspace: blauth-helper logout WORKSPACE")
	}
	req := controlRequest(ipc.ActionKeyringDelete, ipc.KeyWorkspace, ws)
	if _, err := a.call(req, keyringTimeout, true); err != nil {
		return a.fail(err)
	}
	fmt.Fprintf(a.stderr, "blauth: removed the secret for %s from the OS keyring\n", ws)
	return exitOK
}

// deviceLogin runs the device flow through the daemon: it shows the URL and code, then waits
// with a spinner while the daemon polls at the server's interval.
func (a *app) deviceLogin(ws string) int {
	ctx, stop := signal.NotifyContext(a.ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	req, err := a.request(ipc.ActionLoginStart, ws)
	if err != nil {
		return a.fail(err)
	}
	c, err := a.dial(true)
	if err != nil {
		return a.fail(err)
	}
	defer c.Close()
	start, err := do(c, req, 30*time.Second)
	if err != nil {
		return a.fail(err)
	}
	a.warn(start.Value(ipc.KeyHint))
	uri := cmp.Or(start.Value(ipc.KeyVerificationURIComplete), start.Value(ipc.KeyVerificationURI))
	fmt.Fprintf(a.stderr, "To log in to %s, open this address in a browser:\n\n    %s\n\nand check that it shows the code: %s\n\n", ws, uri, start.Value(ipc.KeyUserCode))
	spin := isTerminal(a.stderr)
	frames := `|/-\`
	wait := ipc.NewMessage(ipc.KeyVersion, start.Value(ipc.KeyVersion), ipc.KeyAction, ipc.ActionLoginWait, ipc.KeyFlow, start.Value(ipc.KeyFlow), ipc.KeyWait, "1")
	began := time.Now()
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return a.fail(errors.New("login interrupted"))
		}
		if spin {
			fmt.Fprintf(a.stderr, "\r%c waiting for approval (%s)", frames[i%4], time.Since(began).Round(time.Second))
		}
		resp, err := c.DoTimeout(wait, 40*time.Second)
		if ipc.ErrorCode(err) == ipc.CodeLoginPending {
			continue
		}
		if spin {
			fmt.Fprint(a.stderr, "\r\033[K")
		}
		if err != nil {
			return a.fail(err)
		}
		fmt.Fprintf(a.stderr, "blauth: logged in to %s; the session is saved in %s\n", ws, resp.Value(ipc.KeySaved))
		return exitOK
	}
}
