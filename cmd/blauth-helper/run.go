package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/blauth/blauth/ipc"
)

// Exit statuses. docs/HELPER.md lists them; scripts may branch on them.
const (
	exitOK          = 0
	exitError       = 1 // anything not listed below
	exitUsage       = 2 // bad command line
	exitUnreachable = 3 // no daemon answers (and none could be started)
	exitNoCreds     = 4 // no workspace or no credential for it
	exitAuthFailed  = 5 // the credential was refused: log in again
	exitUnavailable = 6 // no valid token now; the token endpoint cannot be reached
	exitKeyring     = 7 // the OS keyring is unavailable
)

const usage = `usage: blauth-helper [-w WORKSPACE] COMMAND [ARGS]

Commands:
  token [WORKSPACE]          print the token (a drop-in for 'bl token')
  header [WORKSPACE]         print X-Blaxel-Authorization and X-Blaxel-Workspace header lines
  env [WORKSPACE]            print 'export BL_WORKSPACE=… BL_API_KEY=…' lines for eval
  exec [-w WORKSPACE] -- CMD [ARGS]
                             run CMD with BL_WORKSPACE and BL_API_KEY set
  status [--json]            show each workspace, its credential, source and token state
  login WORKSPACE [--api-key | --client-credentials]
                             store a secret read from stdin in the OS keyring, or, with no
                             flag, log in through the browser (device flow) as 'bl login' does
  logout WORKSPACE           remove the workspace's secret from the OS keyring
  reload                     make the daemon re-read every source
  get | store | erase        the git credential helper protocol (git calls these)
  version                    print the version

Options:
  -w, --workspace NAME       the workspace (default: BL_WORKSPACE, else the bl context)
      --min-ttl SECONDS      require at least this much life left in the token

Environment: BLAUTH_SOCKET (socket path), BLAUTH_NO_SPAWN=1 (never start blauthd).
`

type app struct {
	ctx       context.Context
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	workspace string
	minTTL    string
	socket    string
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, socket: ipc.DefaultSocketPath()}
	rest, err := a.globalFlags(args)
	if err != nil {
		return a.usageError(err.Error())
	}
	if len(rest) == 0 {
		return a.usageError("no command")
	}
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "token", "header", "env":
		return a.cmdToken(cmd, rest)
	case "exec":
		return a.cmdExec(rest)
	case "status":
		return a.cmdStatus(rest)
	case "login":
		return a.cmdLogin(rest)
	case "logout":
		return a.cmdLogout(rest)
	case "reload":
		return a.simple(ipc.ActionReload)
	case "ping":
		return a.simple(ipc.ActionPing)
	case "get", "store", "erase":
		return a.cmdGit(cmd)
	case "version", "--version":
		fmt.Fprintf(stdout, "blauth-helper %s\n", version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		// git calls helpers with actions it may add later; unknown actions must be ignored.
		if !strings.HasPrefix(cmd, "-") && os.Getenv("GIT_EXEC_PATH") != "" {
			return exitOK
		}
		return a.usageError(fmt.Sprintf("unknown command %q", cmd))
	}
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
			rest = append(rest, arg)
		}
	}
	return rest, nil
}

func (a *app) usageError(msg string) int {
	fmt.Fprintf(a.stderr, "blauth: error: %s\n", msg)
	fmt.Fprintf(a.stderr, "blauth: hint: run 'blauth-helper help' for usage\n")
	return exitUsage
}

// fail prints err with its hint and returns the exit status it maps to: the one place errors
// become exit codes.
func (a *app) fail(err error) int {
	var e *ipc.Error
	code := exitError
	hint := ""
	switch {
	case errors.As(err, &e):
		hint = e.Hint
		switch e.Code {
		case ipc.CodeNoWorkspace, ipc.CodeNoCredentials:
			code = exitNoCreds
		case ipc.CodeAuthFailed:
			code = exitAuthFailed
		case ipc.CodeUnavailable:
			code = exitUnavailable
		case ipc.CodeKeyringUnavailable:
			code = exitKeyring
		}
	case errors.Is(err, ipc.ErrUnreachable):
		code = exitUnreachable
		if noSpawn() {
			hint = "start it with 'systemctl --user start blauthd.socket' or 'blauthd &', or unset BLAUTH_NO_SPAWN"
		} else {
			hint = "start it with 'systemctl --user start blauthd.socket' or 'blauthd &'; a daemon started on demand logs to " +
				filepath.Join(filepath.Dir(a.socket), "blauthd.log")
		}
	}
	fmt.Fprintf(a.stderr, "blauth: error: %v\n", err)
	if hint != "" {
		fmt.Fprintf(a.stderr, "blauth: hint: %s\n", hint)
	}
	return code
}

// request builds a request carrying the caller's directory and BL_* variables.
func (a *app) request(action, workspace string) *ipc.Message {
	m := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, action)
	if workspace != "" {
		m.Add(ipc.KeyWorkspace, workspace)
	}
	if wd, err := os.Getwd(); err == nil && ipc.ValidValue(wd) {
		m.Add(ipc.KeyDir, wd)
	}
	m.Fields = append(m.Fields, ipc.CallerEnv(os.Environ())...)
	if a.minTTL != "" {
		m.Add(ipc.KeyMinTTL, a.minTTL)
	}
	return m
}

// call sends one request, starting a daemon first if none answers.
func (a *app) call(req *ipc.Message, timeout time.Duration) (*ipc.Message, error) {
	c, err := a.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.DoTimeout(req, timeout)
}

func (a *app) dial() (*ipc.Client, error) {
	c, err := ipc.Dial(a.socket, 2*time.Second)
	if err == nil || !errors.Is(err, ipc.ErrUnreachable) || noSpawn() {
		return c, err
	}
	if serr := spawnDaemon(a.socket); serr != nil {
		return nil, fmt.Errorf("%w; starting one failed: %v", err, serr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for wait := 2 * time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		c, err = ipc.Dial(a.socket, 2*time.Second)
		if err == nil || !errors.Is(err, ipc.ErrUnreachable) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(wait)
	}
}

// noSpawn reports whether BLAUTH_NO_SPAWN forbids starting a daemon: any value but "", "0" and
// "false", so that BLAUTH_NO_SPAWN=true does what it says.
func noSpawn() bool {
	switch os.Getenv("BLAUTH_NO_SPAWN") {
	case "", "0", "false":
		return false
	}
	return true
}

func (a *app) positionalWorkspace(args []string) (string, error) {
	ws := a.workspace
	switch len(args) {
	case 0:
	case 1:
		if strings.HasPrefix(args[0], "-") {
			return "", fmt.Errorf("unknown flag %q", args[0])
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

func (a *app) token(workspace string) (*ipc.Token, error) {
	resp, err := a.call(a.request(ipc.ActionGet, workspace), 35*time.Second)
	if err != nil {
		return nil, err
	}
	return ipc.ParseToken(resp)
}

func (a *app) cmdToken(cmd string, args []string) int {
	ws, err := a.positionalWorkspace(args)
	if err != nil {
		return a.usageError(err.Error())
	}
	t, err := a.token(ws)
	if err != nil {
		return a.fail(err)
	}
	out, err := tokenOutput(cmd, t)
	if err != nil {
		return a.fail(err)
	}
	if _, err := io.WriteString(a.stdout, out); err != nil {
		return exitError
	}
	return exitOK
}

// tokenOutput formats t for the token, header and env commands. It refuses a token or workspace
// holding CR, LF or NUL, which would let the daemon's answer inject lines into a header file or
// commands into an eval.
func tokenOutput(cmd string, t *ipc.Token) (string, error) {
	if !ipc.ValidValue(t.Token) || !ipc.ValidValue(t.Workspace) {
		return "", errors.New("the daemon sent a token or workspace holding CR, LF or NUL; refusing to print it")
	}
	switch cmd {
	case "token":
		return t.Token + "\n", nil
	case "header":
		return "X-Blaxel-Authorization: Bearer " + t.Token + "\nX-Blaxel-Workspace: " + t.Workspace + "\n", nil
	case "env":
		return "export BL_WORKSPACE=" + shellQuote(t.Workspace) + "\nexport BL_API_KEY=" + shellQuote(t.Token) + "\n", nil
	}
	return "", fmt.Errorf("unknown output %q", cmd)
}

// shellQuote quotes s for POSIX shells.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@%+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (a *app) cmdExec(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	} else if len(args) > 0 && strings.HasPrefix(args[0], "-") {
		return a.usageError(fmt.Sprintf("unknown flag %q", args[0]))
	}
	if len(args) == 0 {
		return a.usageError("exec needs a command: blauth-helper exec -- CMD [ARGS]")
	}
	t, err := a.token(a.workspace)
	if err != nil {
		return a.fail(err)
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		fmt.Fprintf(a.stderr, "blauth: error: %v\n", err)
		return 127
	}
	env := withEnv(os.Environ(), "BL_WORKSPACE", t.Workspace, "BL_API_KEY", t.Token)
	if a.stdout != os.Stdout {
		// Under test: run as a child so the test process survives.
		cmd := exec.CommandContext(a.ctx, path, args[1:]...)
		cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, a.stdin, a.stdout, a.stderr
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			}
			return a.fail(err)
		}
		return exitOK
	}
	// Replace this process: the exit status, signals and the terminal all pass straight through.
	err = syscall.Exec(path, args, env)
	fmt.Fprintf(a.stderr, "blauth: error: exec %s: %v\n", args[0], err)
	return 126
}

func withEnv(environ []string, kv ...string) []string {
	set := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		set[kv[i]] = kv[i+1]
	}
	out := make([]string, 0, len(environ)+len(set))
	for _, e := range environ {
		k, _, _ := strings.Cut(e, "=")
		if _, ok := set[k]; !ok {
			out = append(out, e)
		}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, kv[i]+"="+kv[i+1])
	}
	return out
}

func (a *app) simple(action string) int {
	resp, err := a.call(a.request(action, a.workspace), 10*time.Second)
	if err != nil {
		return a.fail(err)
	}
	if action == ipc.ActionPing {
		fmt.Fprintf(a.stdout, "blauthd %s (pid %s) on %s\n", resp.Value("daemon_version"), resp.Value("pid"), a.socket)
	}
	return exitOK
}

// status mirrors the JSON that blauthd sends (daemon.Status).
type status struct {
	Version    string `json:"version"`
	PID        int    `json:"pid"`
	Socket     string `json:"socket"`
	Default    string `json:"default_workspace"`
	Workspaces []struct {
		Workspace    string    `json:"workspace"`
		Kind         string    `json:"kind"`
		Source       string    `json:"source"`
		Shadows      []string  `json:"shadows"`
		Expiry       time.Time `json:"expiry"`
		LastRefresh  time.Time `json:"last_refresh"`
		LastError    string    `json:"last_error"`
		Error        string    `json:"error"`
		SourceErrors []struct {
			Source struct{ Kind, Where string } `json:"source"`
			Error  string                       `json:"error"`
		} `json:"source_errors"`
	} `json:"workspaces"`
}

func (a *app) cmdStatus(args []string) int {
	asJSON := false
	for _, arg := range args {
		if arg != "--json" {
			return a.usageError(fmt.Sprintf("unexpected argument %q", arg))
		}
		asJSON = true
	}
	resp, err := a.call(a.request(ipc.ActionStatus, a.workspace), 10*time.Second)
	if err != nil {
		return a.fail(err)
	}
	raw := resp.Value(ipc.KeyJSON)
	if asJSON {
		fmt.Fprintln(a.stdout, raw)
		return exitOK
	}
	var st status
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return a.fail(fmt.Errorf("the daemon's status is not valid JSON: %w", err))
	}
	fmt.Fprintf(a.stdout, "blauthd %s, pid %d, socket %s\n", st.Version, st.PID, st.Socket)
	if st.Default != "" {
		fmt.Fprintf(a.stdout, "default workspace: %s\n", st.Default)
	}
	fmt.Fprintln(a.stdout)
	if len(st.Workspaces) == 0 {
		fmt.Fprintln(a.stdout, "no workspace is configured: set BL_WORKSPACE and BL_API_KEY (or BL_CLIENT_CREDENTIALS), run 'bl login', or 'blauth-helper login WORKSPACE'")
		return exitOK
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKSPACE\tKIND\tSOURCE\tEXPIRES\tLAST REFRESH\tSTATE")
	for _, w := range st.Workspaces {
		state := "ok"
		switch {
		case w.Error != "":
			state = w.Error
		case w.LastError != "":
			state = "error: " + w.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.Workspace, dash(w.Kind), dash(w.Source), when(w.Expiry, w.Kind), when(w.LastRefresh, ""), state)
	}
	tw.Flush()
	for _, w := range st.Workspaces {
		for _, s := range w.Shadows {
			fmt.Fprintf(a.stdout, "%s: also has %s (shadowed)\n", w.Workspace, s)
		}
		for _, e := range w.SourceErrors {
			fmt.Fprintf(a.stdout, "%s: source %s:%s: %s\n", w.Workspace, e.Source.Kind, e.Source.Where, e.Error)
		}
	}
	return exitOK
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t time.Time, kind string) string {
	if t.IsZero() {
		if kind == ipc.KindAPIKey {
			return "never"
		}
		return "-"
	}
	d := time.Until(t).Round(time.Second)
	if d < 0 {
		return fmt.Sprintf("%s ago", -d)
	}
	return fmt.Sprintf("in %s", d)
}

// cmdGit speaks git's credential helper protocol: attributes on stdin, an answer on stdout.
func (a *app) cmdGit(action string) int {
	in, err := readGitInput(a.stdin)
	if err != nil {
		return a.fail(err)
	}
	ws := a.workspace
	if ws == "" {
		// https://WORKSPACE@host/… makes git send username=WORKSPACE.
		ws = in.Value("username")
	}
	switch action {
	case "store":
		// git stores what a helper gave it; the daemon already holds it.
		return exitOK
	case "erase":
		req := a.request(ipc.ActionErase, ws)
		if p := in.Value("password"); p != "" {
			req.Add(ipc.KeyToken, p)
		} else if c := in.Value("credential"); c != "" {
			req.Add(ipc.KeyToken, c)
		}
		// No daemon means no cached token: there is nothing to erase, and no reason to start one.
		c, err := ipc.Dial(a.socket, 2*time.Second)
		if errors.Is(err, ipc.ErrUnreachable) {
			return exitOK
		}
		if err != nil {
			return a.fail(err)
		}
		defer c.Close()
		if _, err := c.DoTimeout(req, 10*time.Second); err != nil {
			return a.fail(err)
		}
		return exitOK
	}
	t, err := a.token(ws)
	if err != nil {
		return a.fail(err)
	}
	b, err := gitAnswer(t, in)
	if err != nil {
		return a.fail(err)
	}
	if _, err := a.stdout.Write(b); err != nil {
		return exitError
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

// spawnDaemon starts blauthd in the background, in its own session, as git's credential-cache
// starts its daemon. The daemon gets this environment minus every BL_* variable: each request
// carries the caller's own, so one shell's credentials, workspace or API endpoint (BL_API_URL,
// BL_ENV) never become the daemon's, serving every later caller or redirecting the secrets the
// daemon holds to another host. It is what a daemon started by systemd sees, too.
func spawnDaemon(socket string) error {
	// The daemon runs in /, so a relative socket path must be made absolute here.
	socket, err := filepath.Abs(socket)
	if err != nil {
		return err
	}
	bin := os.Getenv("BLAUTH_DAEMON")
	if bin == "" {
		if self, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(self), "blauthd"); isExecutable(p) {
				bin = p
			}
		}
	}
	if bin == "" {
		p, err := exec.LookPath("blauthd")
		if err != nil {
			return errors.New("blauthd is not installed next to blauth-helper nor on PATH")
		}
		bin = p
	}
	dir := filepath.Dir(socket)
	if err := ipc.PrepareSocketDir(dir); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "blauthd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--socket", socket, "--log-format", "json")
	cmd.Env = daemonEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

func daemonEnv(environ []string) []string {
	out := environ[:0:0]
	for _, e := range environ {
		k, _, _ := strings.Cut(e, "=")
		if strings.HasPrefix(k, "BL_") || k == "BLAUTH_NO_SPAWN" {
			continue
		}
		out = append(out, e)
	}
	return out
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}
