package main

import (
	"fmt"
	"strings"

	"github.com/blauth/blauth/ipc"
)

// The proxy and the MCP bridge need net/http and TLS, which the helper does not link (it starts
// on every git push): they live in blauth-proxy, which the helper replaces itself with.

// cmdMCP bridges an MCP client's stdio to the MCP server at URL, through blauth-proxy.
func (a *app) cmdMCP(args []string) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		return a.usageError("mcp takes one argument, the MCP server's URL: blauth-helper [-w WORKSPACE] mcp URL")
	}
	if !strings.HasPrefix(args[0], "https://") && !strings.HasPrefix(args[0], "http://") {
		return a.usageError(fmt.Sprintf("%q is not an http or https URL", args[0]))
	}
	t, err := a.token(a.workspace)
	if err != nil {
		return a.fail(err)
	}
	return a.execProxy(t, []string{"mcp", args[0]})
}

// execProxy replaces the helper with blauth-proxy running args, for the workspace t was served
// for (so that the proxy follows the workspace the helper checked), with the helper's --min-ttl
// and socket. A daemon answered t: the proxy finds one, even if the helper just started it.
func (a *app) execProxy(t *ipc.Token, args []string) int {
	path, err := a.proxyPath()
	if err != nil {
		a.printError(err.Error(), "install blauth-proxy beside blauth-helper or on PATH, or name it in BLAUTH_PROXY")
		return 127
	}
	a.warn(t.Hint)
	argv := []string{path, "-w", t.Workspace}
	if a.minTTL != "" {
		argv = append(argv, "--min-ttl", a.minTTL)
	}
	argv = append(argv, args...)
	env := withEnv(a.environ(), ipc.SocketEnv, a.socket)
	status, err := a.exec(path, argv, env)
	if err != nil {
		a.printError(fmt.Sprintf("exec %s: %v", path, err), "")
		return 126
	}
	return status
}

// proxyPath finds blauth-proxy as the helper finds blauthd: $BLAUTH_PROXY, else beside the
// helper, else on PATH.
func (a *app) proxyPath() (string, error) {
	if p := a.getenv("BLAUTH_PROXY"); p != "" {
		if !isExecutable(p) {
			return "", fmt.Errorf("BLAUTH_PROXY names %s, which is not an executable file", p)
		}
		return p, nil
	}
	return installed("blauth-proxy", a.lookPath)
}
