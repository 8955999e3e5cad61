package main

import (
	"flag"
	"fmt"
	"strings"
)

// flagDoc is one flag as --help shows it: its value's name ("" for a switch) and what it does.
// The default comes from the flag set, so that the two cannot drift; a test checks that every
// flag defined has a line.
type flagDoc struct {
	name, arg, usage string
}

// flagDocs are blauthd's flags in the order --help lists them, in groups.
var flagDocs = [][]flagDoc{
	{
		{"socket", "PATH", "listen on PATH, an absolute path (default $BLAUTH_SOCKET, else $XDG_RUNTIME_DIR/blauth/blauthd.sock); a socket passed by systemd (LISTEN_FDS) wins"},
		{"scoped-socket", "PATH=WS[,WS…]", "also serve a socket that answers get and watch for those workspaces only, to forward over SSH or into a container (repeatable)"},
		{"config", "FILE", "blauth's config file (default $XDG_CONFIG_HOME/blauth/config.yaml, read if it exists)"},
		{"bl-config", "FILE", "the bl CLI config (default $HOME/.blaxel/config.yaml)"},
		{"no-write-back", "", "do not save refreshed bl login sessions into the bl config"},
		{"no-keyring", "", "do not use the OS keyring (as BLAUTH_NO_KEYRING=1 or keyring: false in the config file)"},
		{"keyring-timeout", "DURATION", "time box of each OS keyring call"},
		{"max-conns", "N", "most connections open at once on the daemon's socket, watchers included; more are answered code=busy"},
		{"max-watchers", "N", "most watch streams open at once on the daemon's socket"},
		{"scoped-max-conns", "N", "most connections open at once on each scoped socket"},
		{"scoped-max-watchers", "N", "most watch streams open at once on each scoped socket"},
	},
	{
		{"refresh-left", "FRACTION", "refresh a token in the background when this fraction of its lifetime is left, 0 < f < 1"},
		{"min-ttl", "DURATION", "never serve a token with less life left than this"},
		{"token-url", "URL", "talk RFC 6749 (form-encoded) to this token endpoint instead of Blaxel's JSON one"},
		{"oidc-issuer", "URL", "the same, with the token endpoint taken from this issuer's OIDC metadata"},
		{"oauth2", "", "talk RFC 6749 (form-encoded) to {BL_API_URL}/oauth/token"},
		{"token-auth", "basic|post|auto", "client authentication at a standard token endpoint"},
	},
	{
		{"metrics-listen", "HOST:PORT", "serve Prometheus metrics at GET /metrics on this address (e.g. 127.0.0.1:9464)"},
		{"metrics-workspaces", "", "label the per-token metrics with workspace names (off: a scrape then names no workspace)"},
		{"log-format", "FORMAT", "json, console, journal, or auto: journal under systemd, console on a terminal, else json"},
		{"log-level", "LEVEL", "debug, info, warn or error"},
		{"version", "", "print the version and exit"},
	},
}

// envDocs are the environment variables blauthd reads, as --help lists them.
var envDocs = [][2]string{
	{"BLAUTH_SOCKET", "the socket path, when --socket is not given"},
	{"BLAUTH_NO_KEYRING", "1: do not use the OS keyring (spawned and socket-activated daemons read it too)"},
	{"XDG_RUNTIME_DIR", "where the socket goes ($XDG_RUNTIME_DIR/blauth/)"},
	{"XDG_CONFIG_HOME", "where blauth's config file is ($XDG_CONFIG_HOME/blauth/config.yaml; default ~/.config)"},
	{"HOME", "where the bl CLI config is ($HOME/.blaxel/config.yaml)"},
	{"BL_WORKSPACE, BL_API_KEY, BL_CLIENT_CREDENTIALS", "the daemon's own credential, for every caller (a caller's own BL_* win for it)"},
	{"BL_API_URL, BL_ENV", "the Blaxel API the daemon's own credentials go to (default production)"},
	{"BLAUTH_OAUTH_CLIENT_ID, BLAUTH_OAUTH_CLIENT_SECRET", "client authentication for refresh grants at a standard OAuth server"},
	{"DBUS_SESSION_BUS_ADDRESS", "the session bus the OS keyring is reached through; without one (and no $XDG_RUNTIME_DIR/bus) the keyring is off"},
	{"LISTEN_FDS, NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM", "set by systemd: socket activation, readiness, watchdog, journal logging"},
	{"BLAUTH_MANAGER", "what started the daemon (spawned: blauth-helper), shown by ping and status"},
	{"NO_COLOR", "no colours in --log-format console"},
}

// usage is blauthd --help.
func usage() string {
	var o options
	fs := newFlagSet(&o)
	var b strings.Builder
	b.WriteString(`blauthd: blauth's per-user credential daemon. It reads your Blaxel credentials (.env files,
the environment, the OS keyring, the bl CLI config), keeps one fresh token per credential,
refreshing it before it expires, and serves it over a private Unix socket to blauth-helper,
the client libraries and blauth-proxy.

Usage:
  blauthd [FLAGS]

It is usually started for you: by systemd's socket unit (systemctl --user enable --now
blauthd.socket), or by the first blauth-helper command that finds none running.

Flags:
`)
	for i, group := range flagDocs {
		if i > 0 {
			b.WriteString("\n")
		}
		for _, d := range group {
			head := "--" + d.name
			if d.arg != "" {
				head += " " + d.arg
			}
			text := d.usage
			if f := fs.Lookup(d.name); f != nil && d.arg != "" && f.DefValue != "" && !strings.Contains(text, "(default") {
				text += " (default " + f.DefValue + ")"
			}
			writeItem(&b, head, text)
		}
	}
	b.WriteString(`  -h, --help               print this help

Environment:
`)
	for _, e := range envDocs {
		writeItem(&b, e[0], e[1])
	}
	b.WriteString(`
Files:
  $XDG_CONFIG_HOME/blauth/config.yaml
                           blauth's settings, read at start (docs/CONFIG.md); a file with a
                           mistake stops the start with exit status 2
  $HOME/.blaxel/config.yaml
                           bl's config: read and watched; refreshed bl login sessions are
                           written back into it, as bl writes them (mode 0600, by rename)
  ./.env of each caller    read and watched for the requests from that directory
  $XDG_RUNTIME_DIR/blauth/blauthd.sock, blauthd.sock.lock
                           the socket (0600, in a 0700 directory) and the lock beside it
  OS keyring, service "blauth"
                           secrets saved with blauth-helper login --api-key

Exit status:
  0   stopped cleanly (SIGINT, SIGTERM, blauth-helper stop)
  1   cannot run (the socket or the metrics address cannot be used)
  2   bad flags or settings: a flag, BLAUTH_NO_KEYRING, the config file
  3   another blauthd already serves the socket

Signals: SIGHUP re-reads every source (as blauth-helper reload); SIGINT and SIGTERM stop.

Docs: README.md and docs/ (installed in /usr/share/doc/blauth, or PREFIX/share/doc/blauth):
OPERATIONS.md (running it), CONFIG.md (the config file), TROUBLESHOOTING.md.
`)
	return b.String()
}

// writeItem writes one entry of a list: the name in a column of 25 bytes, the text wrapped beside it
// (or on the next line when the name is longer).
func writeItem(b *strings.Builder, name, text string) {
	const col, width = 27, 92
	lines := wrap(text, width-col)
	if len(name) > col-4 {
		fmt.Fprintf(b, "  %s\n", name)
	} else {
		fmt.Fprintf(b, "  %-*s%s\n", col-2, name, lines[0])
		lines = lines[1:]
	}
	for _, l := range lines {
		fmt.Fprintf(b, "%*s%s\n", col, "", l)
	}
}

// wrap breaks text into lines of at most width bytes, at spaces.
func wrap(text string, width int) []string {
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

// definedFlags lists the names of every flag blauthd defines, for the test that --help shows
// each.
func definedFlags() []string {
	var o options
	var names []string
	newFlagSet(&o).VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}
