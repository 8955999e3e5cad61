package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ExecConfig describes one run of Exec.
type ExecConfig struct {
	// Selection is the token to send. Its Environ is also the command's environment, before
	// Exec sets the BL_* variables that point it at the proxy.
	Selection
	RunURL string // BL_RUN_URL of the caller, "" when unset (see RunBase)
	// RunDomains are the run domains of BLAUTH_RUN_DOMAINS (see Config.RunDomains).
	RunDomains []string
	Argv       []string // the command and its arguments
	Stdin      io.Reader
	Stdout     io.Writer
	Stderr     io.Writer
	// FirstWait bounds the wait for the first token, which gives the command its BL_WORKSPACE
	// (30 s when zero: a daemon may have to exchange a credential first).
	FirstWait time.Duration
	Logf      func(format string, a ...any) // problems worth telling; nil discards them
}

// CommandError is a command that could not be started. NotFound tells "no such command" (exit
// status 127 in shells) from "found but could not run" (126).
type CommandError struct {
	Name     string
	NotFound bool
	Err      error
}

func (e *CommandError) Error() string { return e.Name + ": " + e.Err.Error() }
func (e *CommandError) Unwrap() error { return e.Err }

// Exec runs the command of cfg as a child with a proxy that lives as long as it: the child's
// BL_API_URL is {proxy}/api, BL_RUN_URL {proxy}/run, BL_WORKSPACE the workspace served, and
// BL_API_KEY the proxy's per-run secret; BL_CLIENT_CREDENTIALS is removed, so the child holds
// no Blaxel secret at all. SIGINT, SIGTERM and SIGHUP are passed on to the child (a SIGINT
// typed at the terminal, which the child got too, is not sent twice). When the child ends, the
// proxy stops and Exec returns the child's exit status (128+N when signal N killed it).
//
// A failure before the child runs is an error: the daemon's answer (an *ipc.Error), a .env in
// the directory that would undo the proxy (an *ipc.Error, see ipc.DotenvConflict), an error
// wrapping ipc.ErrUnreachable, or a *CommandError.
func Exec(ctx context.Context, cfg ExecConfig) (int, error) {
	if len(cfg.Argv) == 0 {
		return 0, errors.New("no command to run")
	}
	tokens, err := NewTokens(cfg.Selection, cfg.Logf) // it and NewServer take a nil Logf as discard
	if err != nil {
		return 0, err
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); _ = tokens.Run(ctx) }()
	defer func() { cancel(); <-watchDone }()

	// The first token names the workspace the child is told.
	cred, status, err := firstCredential(ctx, tokens, cfg.FirstWait, sigs)
	if err != nil || status != 0 {
		return status, err
	}
	if cred.DotenvConflict != nil {
		// The child would read its directory's .env and go around the proxy.
		return 0, cred.DotenvConflict
	}

	path, err := exec.LookPath(cfg.Argv[0])
	if err != nil {
		return 0, &CommandError{Name: cfg.Argv[0], NotFound: errors.Is(err, exec.ErrNotFound), Err: err}
	}
	secret := NewSecret()
	srv, err := NewServer(Config{Tokens: tokens, Secret: secret, RunURL: cfg.RunURL, RunDomains: cfg.RunDomains, Logf: cfg.Logf})
	if err != nil {
		return 0, err
	}
	ln, err := Listen()
	if err != nil {
		return 0, fmt.Errorf("listen on 127.0.0.1: %w", err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-serveDone }()

	base := "http://" + ln.Addr().String()
	cmd := exec.Command(path, cfg.Argv[1:]...)
	cmd.Args[0] = cfg.Argv[0]
	cmd.Env = childEnv(cfg.Environ, base, cred.Workspace, secret.Value())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.Stdin, cfg.Stdout, cfg.Stderr
	if err := cmd.Start(); err != nil {
		return 0, &CommandError{Name: cfg.Argv[0], Err: err}
	}
	return waitChild(cmd, sigs)
}

// firstCredential waits up to wait (30 s when 0) for the daemon's first token; a signal first
// ends the run with status 128+N.
func firstCredential(ctx context.Context, tokens *Tokens, wait time.Duration, sigs <-chan os.Signal) (Credential, int, error) {
	if wait <= 0 {
		wait = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var cred Credential
	var err error
	got := make(chan struct{})
	go func() { cred, err = tokens.Current(ctx); close(got) }() // after a signal, read by nobody
	select {
	case <-got:
		return cred, 0, err
	case sig := <-sigs:
		return Credential{}, 128 + int(sig.(syscall.Signal)), nil // what package signal delivers
	}
}

// waitChild passes signals on to the started cmd until it ends, and returns its status.
func waitChild(cmd *exec.Cmd, sigs <-chan os.Signal) (int, error) {
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGINT && typedAtTerminal() {
				continue // the terminal sent it to the child's process group as well
			}
			_ = cmd.Process.Signal(sig)
		case err := <-waited:
			return exitStatus(cmd, err)
		}
	}
}

// childEnv is environ with the proxy's variables set and BL_CLIENT_CREDENTIALS removed.
// BL_DISABLE_H2 keeps the TypeScript SDK on the URLs it is given: with HTTP/2 it sends a
// sandbox's requests over a session of its own to its region's edge host, around the proxy.
func childEnv(environ []string, base, workspace, secret string) []string {
	set := []string{"BL_API_URL=" + base + APIPrefix, "BL_RUN_URL=" + base + RunPrefix, "BL_WORKSPACE=" + workspace,
		"BL_API_KEY=" + secret, "BL_DISABLE_H2=true"}
	out := make([]string, 0, len(environ)+len(set))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if k != "BL_CLIENT_CREDENTIALS" && !slices.ContainsFunc(set, func(s string) bool { return strings.HasPrefix(s, k+"=") }) {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

// exitStatus is the status a shell reports for the child: its exit code, or 128+N when
// signal N ended it.
func exitStatus(cmd *exec.Cmd, err error) (int, error) {
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return 0, err
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return cmd.ProcessState.ExitCode(), nil
}
