package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/blauth/blauth/ipc"
)

// Exit statuses: ipc's, which blauth-proxy shares (docs/HELPER.md lists them).
const (
	exitOK          = ipc.ExitOK
	exitError       = ipc.ExitError
	exitUsage       = ipc.ExitUsage
	exitUnreachable = ipc.ExitUnreachable
	exitNoCreds     = ipc.ExitNoCreds
	exitAuthFailed  = ipc.ExitAuthFailed
	exitUnavailable = ipc.ExitUnavailable
	exitKeyring     = ipc.ExitKeyring
)

// command is one subcommand: its name, its line in the usage, and what runs it.
type command struct {
	name, args, summary string
	run                 func(a *app, args []string) int
}

// commands lists every subcommand, in the order the usage shows them. It is filled by init:
// help prints the usage, which lists the commands.
var commands []command

func init() {
	commands = []command{
		{"token", "[WORKSPACE]", "print the token (a drop-in for 'bl token')", (*app).cmdToken},
		{"header", "[--json] [WORKSPACE]", "print X-Blaxel-Authorization and X-Blaxel-Workspace header lines (--json: one JSON object, with Authorization too)", (*app).cmdToken},
		{"env", "[WORKSPACE]", "print 'export BL_WORKSPACE=… BL_API_KEY=…' lines for eval", (*app).cmdToken},
		{"exec", "[--proxy] -- CMD [ARGS]", "run CMD with BL_WORKSPACE and BL_API_KEY set (--proxy: through a local proxy that sends a fresh token with every request)", (*app).cmdExec},
		{"mcp", "URL", "bridge an MCP client's stdio to the MCP server at URL, with a fresh token on every request", (*app).cmdMCP},
		{"watch", "[--json]", "print the token, then every new one, until interrupted", (*app).cmdWatch},
		{"status", "[--json]", "show each workspace, its credential, source and token state", (*app).cmdStatus},
		{"login", "WORKSPACE [--api-key | --client-credentials]", "store a secret read from stdin in the OS keyring or, with no flag, log in through the browser (device flow) as 'bl login' does", (*app).cmdLogin},
		{"logout", "WORKSPACE", "remove the workspace's secret from the OS keyring", (*app).cmdLogout},
		{"reload", "", "make the daemon re-read every source", (*app).cmdReload},
		{"ping", "", "say whether a daemon answers, and which (never starts one)", (*app).cmdPing},
		{"stop", "", "stop the daemon this helper talks to", (*app).cmdStop},
		{"get", "", "the git credential helper protocol (git calls get, store and erase)", (*app).cmdGit},
		{"store", "", "", (*app).cmdGit},
		{"erase", "", "", (*app).cmdGit},
		{"version", "", "print the version", (*app).cmdVersion},
		{"help", "", "print this help", (*app).cmdHelp},
	}
}

// globalOptions are the flags every command takes, before or after its name.
var globalOptions = []string{"-w", "--workspace", "--min-ttl"}

func usage() string {
	var b strings.Builder
	b.WriteString("usage: blauth-helper [-w WORKSPACE] [--min-ttl SECONDS] COMMAND [ARGS]\n\nCommands:\n")
	for _, c := range commands {
		if c.summary == "" {
			continue
		}
		head := c.name
		if c.args != "" {
			head += " " + c.args
		}
		if len(head) > 26 {
			fmt.Fprintf(&b, "  %s\n  %-26s %s\n", head, "", c.summary)
		} else {
			fmt.Fprintf(&b, "  %-26s %s\n", head, c.summary)
		}
	}
	b.WriteString(`
Options:
  -w, --workspace NAME       the workspace (default: BL_WORKSPACE, else the bl context)
      --min-ttl SECONDS      require at least this much life left in the token

Environment: BLAUTH_SOCKET (socket path), BLAUTH_NO_SPAWN=1 (never start blauthd).
`)
	return b.String()
}

// app is one run of the helper.
type app struct {
	ctx context.Context
	system
	cmd       string
	workspace string
	minTTL    string
	socket    string
}

func run(ctx context.Context, args []string, sys system) int {
	a := &app{ctx: ctx, system: sys}
	a.socket = ipc.SocketPath(a.getenv, ipc.DefaultRuntimeDir(a.getenv))
	rest, err := a.globalFlags(args)
	if err != nil {
		return a.usageError(err.Error())
	}
	if len(rest) == 0 {
		return a.usageError("no command")
	}
	name, rest := rest[0], rest[1:]
	for _, c := range commands {
		if c.name == name {
			a.cmd = name
			return c.run(a, rest)
		}
	}
	// git calls helpers with actions it may add later; unknown actions must be ignored.
	if !strings.HasPrefix(name, "-") && a.getenv("GIT_EXEC_PATH") != "" {
		return exitOK
	}
	if strings.HasPrefix(name, "-") {
		return a.usageError(unknownFlag(name, globalOptions))
	}
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	msg := fmt.Sprintf("unknown command %q", name)
	if s := nearest(name, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return a.usageError(msg)
}

// globalFlags takes -w/--workspace and --min-ttl from anywhere before "--", and, for exec,
// before the command to run: "exec ls -w 80" runs "ls -w 80", it does not pick workspace 80.
func (a *app) globalFlags(args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" || (len(rest) > 0 && rest[0] == "exec" && !strings.HasPrefix(arg, "-")) {
			rest = append(rest, args[i:]...)
			break
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
				if n, err := strconv.Atoi(val); err != nil || n < 0 {
					return nil, errors.New("--min-ttl takes a number of seconds")
				}
				a.minTTL = val
			} else {
				if val == "" || !ipc.ValidValue(val) {
					return nil, errors.New("the workspace name is empty or holds a line break")
				}
				a.workspace = val
			}
		default:
			if len(rest) == 0 && strings.HasPrefix(arg, "-") && arg != "-h" && arg != "--help" && arg != "--version" {
				return nil, errors.New(unknownFlag(arg, globalOptions))
			}
			rest = append(rest, arg)
		}
	}
	if len(rest) > 0 {
		switch rest[0] {
		case "-h", "--help":
			rest[0] = "help"
		case "--version":
			rest[0] = "version"
		}
	}
	return rest, nil
}

// unknownFlag names a flag nobody takes, and the one it is probably a typo of.
func unknownFlag(arg string, known []string) string {
	name, _, _ := strings.Cut(arg, "=")
	msg := fmt.Sprintf("unknown flag %q", name)
	if s := nearest(name, known); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return msg
}

// nearest returns the candidate closest to s by edit distance, if it is close enough to be a
// typo of it.
func nearest(s string, candidates []string) string {
	best, bestD := "", 0
	for _, c := range candidates {
		if d := editDistance(s, c); best == "" || d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" || bestD > max(1, len(best)/3) {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (a *app) usageError(msg string) int {
	a.printError(msg, "run 'blauth-helper help' for usage")
	return exitUsage
}

// printError writes the helper's error line, and its hint line when there is a hint: the one
// place that formats them.
func (a *app) printError(msg, hint string) {
	fmt.Fprintf(a.stderr, "blauth: error: %s\n", msg)
	if hint != "" {
		fmt.Fprintf(a.stderr, "blauth: hint: %s\n", hint)
	}
}

// warn prints something the user should know although the command succeeds.
func (a *app) warn(msg string) {
	if msg != "" {
		fmt.Fprintf(a.stderr, "blauth: warning: %s\n", msg)
	}
}

// fail prints err with its hint and returns the exit status it maps to (ipc.ExitStatus, and
// exitUsage for a request the helper will not send): the one place errors become exit codes.
func (a *app) fail(err error) int {
	var e *ipc.Error
	var re *requestError
	code := ipc.ExitStatus(err)
	hint := ""
	switch {
	case errors.As(err, &e):
		hint = e.Hint
	case errors.Is(err, ipc.ErrUnreachable):
		switch {
		case a.noSpawn():
			hint = "start it with 'systemctl --user start blauthd.socket' or 'blauthd &', or unset BLAUTH_NO_SPAWN"
		case a.cmd == "ping" || a.cmd == "stop":
			hint = "start it with 'systemctl --user start blauthd.socket' or 'blauthd &'; other commands start one on demand"
		default:
			hint = "start it with 'systemctl --user start blauthd.socket' or 'blauthd &'; a daemon started on demand logs to " + a.logPath()
		}
	case errors.As(err, &re):
		code = exitUsage
		hint = re.hint
	}
	a.printError(err.Error(), hint)
	return code
}

// logPath is where a daemon the helper starts writes its log.
func (a *app) logPath() string { return filepath.Join(filepath.Dir(a.socket), "blauthd.log") }

func (a *app) cmdVersion(args []string) int {
	fmt.Fprintf(a.stdout, "blauth-helper %s\n", version)
	return exitOK
}

func (a *app) cmdHelp(args []string) int {
	fmt.Fprint(a.stdout, usage())
	return exitOK
}
