// Command blauthd is blauth's per-user credential daemon: it keeps one fresh Blaxel token per
// workspace and serves it over a Unix socket. See README.md and docs/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/harden"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run is blauthd: exit 0 after a clean stop, 1 when it cannot run, 2 for bad flags or settings
// (the environment, the config file), 3 when another blauthd already serves the socket.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, usage())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "blauthd: error: %v\nblauthd: hint: run 'blauthd --help' for the flags\n", err)
		return 2
	}
	if o.showVersion {
		fmt.Fprintf(stdout, "blauthd %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	var cfg daemon.Config
	if err == nil {
		cfg, err = o.config(log)
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "blauthd: error: %v\n", err)
		return 2
	}
	if err := harden.Process(); err != nil {
		log.Warn().Err(err).Msg("could not disable core dumps")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg.Reload = daemon.NotifyReload(ctx)
	if err := daemon.Run(ctx, cfg); err != nil {
		log.Error().Err(err).Msg("blauthd cannot run")
		if errors.Is(err, daemon.ErrAlreadyRunning) {
			return 3
		}
		return 1
	}
	return 0
}
