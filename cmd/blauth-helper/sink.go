package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/blauth/blauth/ipc"
)

// sinkFormats are what sink --format takes.
var sinkFormats = []string{"token", "header", "env", "json"}

// sinkOptions is what sink was asked to do.
type sinkOptions struct {
	format string
	exec   string // run with /bin/sh -c after each write; "" none
	keep   bool
	path   string
}

func parseSink(args []string) (*sinkOptions, error) {
	o := &sinkOptions{format: "token"}
	rest, err := commandFlags(args, []string{"--format", "--exec"}, true, func(name, val string, hasVal bool) error {
		switch {
		case name == "--keep" && hasVal:
			return errors.New("--keep takes no value")
		case name == "--keep":
			o.keep = true
		case name == "--exec" && strings.TrimSpace(val) == "":
			return errors.New("--exec needs a command")
		case name == "--exec":
			o.exec = val
		case name == "--format" && !slices.Contains(sinkFormats, val):
			return fmt.Errorf("unknown format %q: --format takes %s", val, strings.Join(sinkFormats, ", "))
		case name == "--format":
			o.format = val
		default:
			return errors.New(unknownFlag(name, []string{"--format", "--exec", "--keep"}))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(rest) != 1 {
		return nil, errors.New("sink takes one PATH: blauth-helper sink [--format token|header|env|json] [--exec CMD] [--keep] PATH")
	}
	o.path = rest[0]
	return o, nil
}

// checkSinkPath refuses a place where another user could put or swap the file: a directory
// that is not this user's or that others may write (a symlink in it could then send the token
// elsewhere), or a PATH that is a symlink or not a regular file.
func checkSinkPath(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("the sink's directory %s: %v", dir, errors.Unwrap(err))
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case st != nil && int(st.Uid) != os.Getuid():
		return fmt.Errorf("the sink's directory %s belongs to another user (uid %d)", dir, st.Uid)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("the sink's directory %s can be written by others (mode %04o)", dir, fi.Mode().Perm())
	}
	fi, err = os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("the sink %s: %v", path, errors.Unwrap(err))
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("%s is a symlink; a sink never writes through one", path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to another user (uid %d)", path, st.Uid)
	}
	return nil
}

// sinkContent is what the sink file holds for t in format.
func sinkContent(format string, t *ipc.Token) ([]byte, error) {
	if format != "json" {
		s, err := tokenOutput(format, t)
		return []byte(s), err
	}
	if !ipc.ValidValue(t.Token) || !ipc.ValidValue(t.Workspace) {
		return nil, errors.New("the daemon sent a token or workspace holding CR, LF or NUL; refusing to write it")
	}
	b, err := json.Marshal(tokenJSON(t))
	return append(b, '\n'), err
}

// cmdSink keeps a file holding the token until interrupted.
func (a *app) cmdSink(args []string) int {
	o, err := parseSink(args)
	if err != nil {
		return a.usageError(err.Error())
	}
	if code := a.placeSink(o); code != exitOK {
		return code
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	t, err := a.token(a.workspace)
	if err != nil {
		return a.fail(err)
	}
	a.warn(t.Hint)
	write := func(t *ipc.Token) error {
		b, err := sinkContent(o.format, t)
		if err == nil {
			err = writeFileAtomic(o.path, b)
		}
		return err
	}
	if err := write(t); err != nil {
		a.printError(fmt.Sprintf("write %s: %v", o.path, err), "")
		return exitError
	}
	if !o.keep {
		defer removeSink(o.path)
	}

	due, stopExec := a.startSinkExec(o)
	defer stopExec()
	due()

	f := a.startFollowing(t.Workspace, t.Token)
	defer f.stop()
	expiry := expiryTimer(t)
	for {
		select {
		case <-sigs:
			return exitOK
		case <-f.done:
			if f.err != nil {
				a.printError(f.err.Error(), oldDaemonHint)
				return exitError
			}
			return exitOK
		case <-expiry.C:
			// No new token came before this one expired: the sink must not hold it.
			removeSink(o.path)
		case nt := <-f.latest:
			expiry.Stop()
			t, expiry = nt, expiryTimer(nt)
			if err := write(t); err != nil {
				a.printError(fmt.Sprintf("write %s: %v", o.path, err), "the sink goes on and writes the next token")
				continue
			}
			due()
		}
	}
}

// placeSink makes o.path absolute and checks it (exit 2 when it is refused).
func (a *app) placeSink(o *sinkOptions) int {
	if !filepath.IsAbs(o.path) {
		wd, err := a.getwd()
		if err != nil {
			return a.fail(&requestError{fmt.Sprintf("cannot tell the working directory (%v) to place %s in", err, o.path), "give PATH as an absolute path"})
		}
		o.path = filepath.Join(wd, o.path)
	}
	if err := checkSinkPath(o.path); err != nil {
		a.printError(err.Error(), "put the sink in a directory only you can write, such as $XDG_RUNTIME_DIR or ~/.config/blauth (mode 0700), and never at a symlink")
		return exitUsage
	}
	return exitOK
}

// startSinkExec starts the runner of --exec (none without it). due asks for a run: one at most
// waits, and it sees the latest write. stop ends the runner, and a run still going.
func (a *app) startSinkExec(o *sinkOptions) (due, stop func()) {
	ctx, cancel := context.WithCancel(a.ctx)
	kick := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if o.exec != "" {
			a.runSinkExec(ctx, o, kick)
		}
	}()
	due = func() {
		select {
		case kick <- struct{}{}:
		default: // a run is already due: it will see this write
		}
	}
	return due, func() { cancel(); <-done }
}

// runSinkExec runs --exec after each write, one run at a time, until ctx ends; a run still
// going then is stopped (SIGTERM to its process group, SIGKILL after the grace).
func (a *app) runSinkExec(ctx context.Context, o *sinkOptions, kick <-chan struct{}) {
	env := withEnv(a.environ(), "BLAUTH_SINK", o.path)
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		c, err := a.startChild("/bin/sh", []string{"sh", "-c", o.exec}, env, nil)
		if err != nil {
			a.printError(fmt.Sprintf("run --exec: %v", err), "")
			continue
		}
		select {
		case <-c.done:
			c.stop(0)
			if st := c.status(); st != 0 {
				a.warn(fmt.Sprintf("the --exec command exited with status %d", st))
			}
		case <-ctx.Done():
			c.stop(defaultGrace)
			return
		}
	}
}

// removeSink removes the sink file, if a regular file is there.
func removeSink(path string) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() {
		_ = os.Remove(path)
	}
}
