// Command blauth-helper is blauth's small client: a git credential helper, and the way scripts,
// IDEs and SDK processes get a Blaxel token from blauthd. It imports only package ipc and the
// standard library (deps_test.go enforces it), so it starts fast: within about 1.1-1.3x the time of a
// minimal Go client, most of it starting the process (docs/BENCHMARKS.md).
package main

import (
	"context"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// main installs no signal handler: for the one-shot commands the default (die at once) is right,
// and a handler costs a signal thread on the hot path. The device login, which waits for minutes,
// installs its own.
func main() { os.Exit(run(context.Background(), os.Args[1:], osSystem())) }
