// Command blauth-helper is blauth's small client: a git credential helper, and the way scripts,
// IDEs and SDK processes get a Blaxel token from blauthd in about a millisecond. It imports only
// package ipc and the standard library (deps_test.go enforces it), so it starts fast.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
