package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/blauth/blauth/ipc"
)

// cmdToken prints the token as the token, header or env command formats it.
func (a *app) cmdToken(args []string) int {
	format := a.cmd
	if a.cmd == "header" && slices.Contains(args, "--json") {
		format = "header-json"
		args = slices.DeleteFunc(args, func(arg string) bool { return arg == "--json" })
	}
	ws, err := a.positionalWorkspace(args)
	if err != nil {
		return a.usageError(err.Error())
	}
	return a.printToken(ws, func(t *ipc.Token) ([]byte, error) {
		out, err := tokenOutput(format, t)
		return []byte(out), err
	})
}

// printToken gets workspace's token and writes what format makes of it, after the daemon's
// hint as a warning: what the token, header, env and git get commands share.
func (a *app) printToken(workspace string, format func(*ipc.Token) ([]byte, error)) int {
	t, err := a.token(workspace)
	if err != nil {
		return a.fail(err)
	}
	out, err := format(t)
	if err != nil {
		return a.fail(err)
	}
	a.warn(t.Hint)
	if _, err := a.stdout.Write(out); err != nil {
		return exitError
	}
	return exitOK
}

// tokenOutput formats t for the token, header and env commands ("header-json" for header
// --json). It refuses a token or workspace holding CR, LF or NUL, which would let the daemon's
// answer inject lines into a header file or commands into an eval.
func tokenOutput(cmd string, t *ipc.Token) (string, error) {
	if !ipc.ValidValue(t.Token) || !ipc.ValidValue(t.Workspace) {
		return "", errors.New("the daemon sent a token or workspace holding CR, LF or NUL; refusing to print it")
	}
	switch cmd {
	case "token":
		return t.Token + "\n", nil
	case "header":
		return "X-Blaxel-Authorization: Bearer " + t.Token + "\nX-Blaxel-Workspace: " + t.Workspace + "\n", nil
	case "header-json":
		// The shape Claude Code's headersHelper reads: one object of header names to values.
		// Authorization too: MCP clients send these headers to MCP endpoints, and Blaxel's MCP
		// documentation names Authorization; the API takes either form.
		b, err := json.Marshal(struct {
			Authorization  string `json:"Authorization"`
			XAuthorization string `json:"X-Blaxel-Authorization"`
			XWorkspace     string `json:"X-Blaxel-Workspace"`
		}{"Bearer " + t.Token, "Bearer " + t.Token, t.Workspace})
		if err != nil {
			return "", err
		}
		return string(b) + "\n", nil
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
