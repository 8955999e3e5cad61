package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
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
		{"exec", "[--proxy | --restart [--grace DURATION] | --signal SIG] -- CMD [ARGS]", "run CMD with BL_WORKSPACE and BL_API_KEY set (--proxy: through a local proxy that sends a fresh token with every request; --restart: restart CMD with each new token; --signal: keep the token in the file BLAUTH_TOKEN_FILE names and send SIG on each new one)", (*app).cmdExec},
		{"mcp", "URL", "bridge an MCP client's stdio to the MCP server at URL, with a fresh token on every request", (*app).cmdMCP},
		{"watch", "[--json]", "print the token, then every new one, until interrupted; it waits for a daemon, never starts one", (*app).cmdWatch},
		{"sink", "[--format token|header|env|json] [--exec CMD] [--keep] PATH", "keep PATH holding the token (0600, replaced atomically), run CMD after each write, remove PATH on exit unless --keep; it starts a daemon only for the first token", (*app).cmdSink},
		{"status", "[--json]", "show each workspace, its credential, source and token state", (*app).cmdStatus},
		{"login", "WORKSPACE [--api-key | --client-credentials]", "store a secret read from stdin in the OS keyring or, with no flag, log in through the browser (device flow) as 'bl login' does", (*app).cmdLogin},
		{"logout", "WORKSPACE", "remove the workspace's secret from the OS keyring", (*app).cmdLogout},
		{"reload", "", "make the daemon re-read every source", (*app).cmdReload},
		{"ping", "", "say whether a daemon answers, and which (never starts one)", (*app).cmdPing},
		{"stop", "", "stop the daemon this helper talks to; it stays stopped until a command needs one", (*app).cmdStop},
		{"get", "", "the git credential helper protocol (git calls get, store and erase)", (*app).cmdGit},
		{"store", "", "", (*app).cmdGit},
		{"erase", "", "", (*app).cmdGit},
		{"version", "", "print the version", (*app).cmdVersion},
		{"help", "", "print this help", (*app).cmdHelp},
	}
}

// globalOptions are the flags every command takes, before or after its name.
var globalOptions = []string{"-w", "--workspace", "--min-ttl", "--help"}

// usageTail is the part of the usage after the commands: flags, environment, files, exit
// statuses (ipc's Exit* constants), docs.
const usageTail = `
Flags (anywhere before "--", and for exec before its command):
  -w, --workspace NAME       the workspace (default: the first BL_WORKSPACE of ./.env, of the
                             environment, of blauthd's environment, else the bl context)
      --min-ttl SECONDS      the token must still live this long (default 0: blauthd's own
                             minimum, 30 s)
  -h, --help                 print this help
      --version              print the version
Flags of one command: --json (header, watch, status), --proxy, --restart, --grace (default
10s) and --signal (exec), --format, --exec and --keep (sink), --api-key and
--client-credentials (login), as listed above.

Environment:
  BLAUTH_SOCKET              the daemon's socket (default $XDG_RUNTIME_DIR/blauth/blauthd.sock,
                             else /run/user/UID/blauth/, else ${TMPDIR:-/tmp}/blauth-UID/)
  XDG_RUNTIME_DIR, TMPDIR    where the socket is when BLAUTH_SOCKET is unset
  BLAUTH_NO_SPAWN            1: never start blauthd (exit 3 when none answers)
  BLAUTH_DAEMON              the blauthd to start (default: beside blauth-helper, else on PATH)
  BLAUTH_PROXY               the blauth-proxy exec --proxy and mcp run (default: beside it, else
                             on PATH)
  BLAUTH_RUN_DOMAINS         exec --proxy: more domains of sandbox hosts the token may go to,
                             comma-separated, besides bl.run (docs/IDE.md)
  BL_*                       sent with every request as the caller's own (BL_WORKSPACE,
                             BL_API_KEY, BL_CLIENT_CREDENTIALS, BL_API_URL, BL_ENV, BL_RUN_URL)
  GIT_EXEC_PATH              set by git: an unknown command is then ignored, as git asks

Files:
  ./.env                     read by blauthd for the directory the helper runs in (the helper
                             sends its working directory)
  SOCKET's directory/blauthd.log
                             where a daemon the helper starts logs (appended; created 0600)
  sink's PATH, and exec --signal's token file (in a 0700 directory under XDG_RUNTIME_DIR,
  removed on exit): the only files the helper writes. login saves through blauthd (the OS
  keyring, or ~/.blaxel/config.yaml for a device login).

Exit status:
  0    success
  1    any other error
  2    bad command line, or something the helper will not send
  3    no daemon answers, and none could be started
  4    no workspace, no credential for it, or the caller's .env cannot be read
  5    the credential was refused for good: log in again or fix the secret
  6    no valid token now, the token endpoint cannot be reached (blauthd retries)
  7    the OS keyring is off or does not answer (login, logout)
  126, 127   exec: the command could not be run, or was not found
  exec otherwise exits with its command's status (128+N when signal N ended it); sink exits 0
  when interrupted.

Docs: docs/HELPER.md (every command, git and curl set-ups), docs/TROUBLESHOOTING.md; installed
in /usr/share/doc/blauth (or PREFIX/share/doc/blauth).
`

func usage() string {
	var b strings.Builder
	b.WriteString(`blauth-helper: the small client of blauthd, blauth's per-user credential daemon. It prints a
fresh Blaxel token for scripts, curl and IDEs, runs commands with one, and is git's credential
helper. Its commands start blauthd when none runs, except ping, stop, watch and git's erase.

Usage:
  blauth-helper [--workspace NAME] [--min-ttl SECONDS] COMMAND [ARGS]

Commands:
`)
	for _, c := range commands {
		if c.summary == "" {
			continue
		}
		head := c.name
		if c.args != "" {
			head += " " + c.args
		}
		lines := wrapText(c.summary, 92-29)
		if len(head) > 26 {
			fmt.Fprintf(&b, "  %s\n", head)
		} else {
			fmt.Fprintf(&b, "  %-26s %s\n", head, lines[0])
			lines = lines[1:]
		}
		for _, l := range lines {
			fmt.Fprintf(&b, "%29s%s\n", "", l)
		}
	}
	b.WriteString(usageTail)
	return b.String()
}

// wrapText breaks text into lines of at most width bytes, at spaces.
func wrapText(text string, width int) []string {
	lines := []string{""}
	for _, w := range strings.Fields(text) {
		switch l := &lines[len(lines)-1]; {
		case *l == "":
			*l = w
		case len(*l)+1+len(w) > width:
			lines = append(lines, w)
		default:
			*l += " " + w
		}
	}
	return lines
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
	return a.usageError(unknown("command", name, names))
}

// globalFlags takes -w/--workspace and --min-ttl from anywhere before "--", and, for exec,
// before the command to run: "exec ls -w 80" runs "ls -w 80", it does not pick workspace 80.
func (a *app) globalFlags(args []string) ([]string, error) {
	var rest []string
	help := false
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
		case "-h", "--help":
			help = true // "blauth-helper token --help" is a question, not a token request
		default:
			if len(rest) == 0 && strings.HasPrefix(arg, "-") && arg != "--version" {
				return nil, errors.New(unknownFlag(arg, globalOptions))
			}
			rest = append(rest, arg)
		}
	}
	if help {
		return []string{"help"}, nil
	}
	if len(rest) > 0 && rest[0] == "--version" {
		rest[0] = "version"
	}
	return rest, nil
}

// commandFlags reads a command's flags, up to "--" and, unless anywhere, up to its first other
// argument ("-" is one when anywhere), and returns the other arguments. set gets each flag: a
// flag of valued has its value after "=" or in the next argument; any other, what follows its
// "=" if it has one (set refuses what it does not take).
func commandFlags(args, valued []string, anywhere bool, set func(name, val string, hasVal bool) error) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			return append(rest, args[i+1:]...), nil
		case strings.HasPrefix(arg, "-") && !(anywhere && arg == "-"):
		case anywhere:
			rest = append(rest, arg)
			continue
		default:
			return append(rest, args[i:]...), nil
		}
		name, val, hasVal := strings.Cut(arg, "=")
		if slices.Contains(valued, name) && !hasVal {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%s needs a value", name)
			}
			i++
			val, hasVal = args[i], true
		}
		if err := set(name, val, hasVal); err != nil {
			return nil, err
		}
	}
	return rest, nil
}

// unknownFlag names a flag nobody takes, and the one it is probably a typo of.
func unknownFlag(arg string, known []string) string {
	name, _, _ := strings.Cut(arg, "=")
	return unknown("flag", name, known)
}

// unknown names a command or flag nobody takes, and the known one it is probably a typo of
// (ipc.Nearest, the daemon's rule too).
func unknown(what, name string, known []string) string {
	msg := fmt.Sprintf("unknown %s %q", what, name)
	if near := ipc.Nearest(name, known); len(near) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", near[0])
	}
	return msg
}

func (a *app) usageError(msg string) int {
	a.printError(msg, "run 'blauth-helper --help' for usage")
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
	var rs *refusedStart
	code := ipc.ExitStatus(err)
	hint := ""
	switch {
	case errors.As(err, &e):
		hint = e.Hint
	case errors.As(err, &rs):
		hint = "fix what it names (blauthd --help lists its settings, docs/CONFIG.md the config file), then run the command again; its log: " + a.logPath()
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
