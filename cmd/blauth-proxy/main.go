// Command blauth-proxy gives a fresh Blaxel token to programs that cannot ask blauthd for one:
// `blauth-proxy exec -- CMD` runs CMD behind an injecting reverse proxy on 127.0.0.1, and
// `blauth-proxy mcp URL` bridges an MCP client's stdio to a Streamable HTTP server. blauth-helper
// execs it for `exec --proxy` and `mcp`, so that the helper itself links neither net/http nor
// TLS. The logic is package proxy; this is flags, paths and exit statuses.
package main

import (
	"context"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], env{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		getenv: os.Getenv, environ: os.Environ, getwd: os.Getwd,
	}))
}
