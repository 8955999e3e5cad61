package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blauth/blauth/cmd/blauth-proxy/internal/proxy"
	"github.com/blauth/blauth/ipc"
)

// Exit statuses: blauth-helper's (ipc's, docs/HELPER.md), and a shell's for a command that
// cannot be run.
const (
	exitOK        = ipc.ExitOK
	exitUsage     = ipc.ExitUsage
	exitCannotRun = 126
	exitNotFound  = 127
)

const usage = `blauth-proxy: gives a fresh Blaxel token from blauthd to programs that cannot ask for one:
a loopback reverse proxy for a command, or a stdio bridge for an MCP client.

Usage:
  blauth-proxy [--workspace NAME] [--min-ttl SECONDS] exec [--] CMD [ARGS]
  blauth-proxy [--workspace NAME] [--min-ttl SECONDS] mcp URL

Usually started by blauth-helper: 'blauth-helper exec --proxy -- CMD', 'blauth-helper mcp URL'.

Commands:
  exec   run CMD with BL_API_URL and BL_RUN_URL pointing at a proxy on 127.0.0.1 that lives as
         long as CMD and sends every request with a fresh token, BL_WORKSPACE set, and
         BL_API_KEY set to the proxy's per-run secret (not a Blaxel credential)
  mcp    bridge an MCP client's stdio (newline-delimited JSON-RPC) to the Streamable HTTP MCP
         server at URL, with fresh auth headers on every request
  version, help

Flags (before the command):
  -w, --workspace NAME    the workspace (default: the first BL_WORKSPACE of ./.env, of the
                          environment, of blauthd's environment, else the bl context)
      --min-ttl SECONDS   never send a token with less life left (default 0: blauthd's 30 s)
  -h, --help              print this help
      --version           print the version

Environment: BLAUTH_SOCKET, XDG_RUNTIME_DIR, TMPDIR (where blauthd's socket is, as for
blauth-helper), BL_RUN_URL (the run base, docs/IDE.md), BLAUTH_RUN_DOMAINS (run domains of
sandbox and preview hosts besides bl.run, comma-separated), BL_* (sent as the caller's own).
It writes no file.

Exit status: as blauth-helper's (2 bad command line, 3 no daemon, 4 no credential, 5 refused,
6 unavailable, 7 keyring); exec: CMD's status, 126/127 when CMD cannot be run or is not found.

Docs: docs/IDE.md (installed in /usr/share/doc/blauth, or PREFIX/share/doc/blauth).
`

// env is what run takes from its process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	environ        func() []string
	getwd          func() (string, error)
}

func run(ctx context.Context, args []string, e env) int {
	sel := proxy.Selection{Socket: ipc.SocketPath(e.getenv, ipc.DefaultRuntimeDir(e.getenv)), Environ: e.environ()}
	rest, err := flags(args, &sel)
	if err != nil {
		return usageError(e, err.Error())
	}
	if len(rest) == 0 {
		return usageError(e, "no command")
	}
	logf := func(format string, a ...any) { fmt.Fprintf(e.stderr, "blauth-proxy: "+format+"\n", a...) }
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "exec":
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			return usageError(e, "exec needs a command: blauth-proxy exec -- CMD [ARGS]")
		}
		// A bad BL_RUN_URL is a configuration error, told before any token is waited for.
		if runURL := e.getenv("BL_RUN_URL"); runURL != "" {
			if _, err := proxy.RunBase("", runURL); err != nil {
				fmt.Fprintf(e.stderr, "blauth: error: %v\nblauth: hint: set BL_RUN_URL to the run base (https://…, or http:// to a loopback address), or unset it\n", err)
				return exitUsage
			}
		}
		domains, err := ipc.ParseRunDomains(e.getenv(proxy.RunDomainsEnv))
		if err != nil {
			fmt.Fprintf(e.stderr, "blauth: error: %s: %v\nblauth: hint: set it to host names separated by commas (sandbox.example.com,preview.example.com), or unset it\n", proxy.RunDomainsEnv, err)
			return exitUsage
		}
		if sel.Dir, err = e.getwd(); err != nil {
			return fail(e, fmt.Errorf("cannot tell the working directory (%v), where a project's .env would be read", err))
		}
		status, err := proxy.Exec(ctx, proxy.ExecConfig{Selection: sel, RunURL: e.getenv("BL_RUN_URL"), RunDomains: domains, Argv: rest,
			Stdin: e.stdin, Stdout: e.stdout, Stderr: e.stderr, Logf: logf})
		if err != nil {
			return fail(e, err)
		}
		return status
	case "mcp":
		if len(rest) != 1 || strings.HasPrefix(rest[0], "-") {
			return usageError(e, "mcp takes one argument, the MCP server's URL")
		}
		if err := proxy.CheckMCPURL(rest[0]); err != nil {
			return usageError(e, err.Error())
		}
		if sel.Dir, err = e.getwd(); err != nil {
			return fail(e, fmt.Errorf("cannot tell the working directory (%v), where a project's .env would be read", err))
		}
		tokens, err := proxy.NewTokens(sel, logf)
		if err != nil {
			return fail(e, err)
		}
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		watch, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = tokens.Run(watch) }()
		err = proxy.Bridge(ctx, proxy.BridgeConfig{URL: rest[0], Tokens: tokens, In: e.stdin, Out: e.stdout,
			UserAgent: "blauth-proxy/" + version, Logf: logf})
		cancel()
		<-done
		if err != nil {
			return fail(e, err)
		}
		return exitOK
	case "version", "--version":
		fmt.Fprintf(e.stdout, "blauth-proxy %s\n", version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	}
	return usageError(e, fmt.Sprintf("unknown command %q", cmd))
}

// flags takes -w/--workspace and --min-ttl from before the command, and for exec from before
// its "--" or the command to run.
func flags(args []string, sel *proxy.Selection) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" || (len(rest) > 0 && (rest[0] == "exec" || rest[0] == "mcp") && !strings.HasPrefix(arg, "-")) {
			return append(rest, args[i:]...), nil
		}
		name, val, hasVal := strings.Cut(arg, "=")
		switch name {
		case "-w", "--workspace", "--min-ttl":
			if !hasVal {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("%s needs a value", name)
				}
				i++
				val = args[i]
			}
			if name == "--min-ttl" {
				n, err := strconv.Atoi(val)
				if err != nil || n < 0 {
					return nil, errors.New("--min-ttl takes a number of seconds")
				}
				sel.MinTTL = time.Duration(n) * time.Second
			} else {
				if val == "" || !ipc.ValidValue(val) {
					return nil, errors.New("the workspace name is empty or holds a line break")
				}
				sel.Workspace = val
			}
		default:
			if strings.HasPrefix(arg, "-") && len(rest) == 0 && arg != "-h" && arg != "--help" && arg != "--version" {
				return nil, fmt.Errorf("unknown flag %q", name)
			}
			rest = append(rest, arg)
		}
	}
	return rest, nil
}

func usageError(e env, msg string) int {
	fmt.Fprintf(e.stderr, "blauth: error: %s\nblauth: hint: run 'blauth-proxy --help' for usage\n", msg)
	return exitUsage
}

// fail prints err and its hint and returns the exit status it maps to: blauth-helper's for the
// daemon's error codes (docs/HELPER.md), 126 and 127 for a command that cannot be run.
func fail(e env, err error) int {
	code, hint := ipc.ExitStatus(err), ""
	var ie *ipc.Error
	var re *ipc.RequestError
	var ce *proxy.CommandError
	switch {
	case errors.As(err, &ie):
		hint = ie.Hint
	case errors.As(err, &re):
		hint = re.Hint
	case errors.Is(err, ipc.ErrUnreachable):
		hint = "start it with 'systemctl --user start blauthd.socket' or 'blauthd &', or run this through blauth-helper, which starts one"
	case errors.Is(err, proxy.ErrStale):
		code = ipc.ExitUnavailable
	case errors.As(err, &ce):
		code = exitCannotRun
		if ce.NotFound {
			code = exitNotFound
		}
	}
	fmt.Fprintf(e.stderr, "blauth: error: %v\n", err)
	if hint != "" {
		fmt.Fprintf(e.stderr, "blauth: hint: %s\n", hint)
	}
	return code
}
