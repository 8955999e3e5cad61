package main

import (
	"io"
	"os"
	"os/exec"
	"syscall"
)

// system is everything the helper takes from, or does to, its process: its streams and
// environment, replacing itself with another program, and starting a daemon. main passes the
// real one; tests pass their own and run every command in their process.
type system struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	environ        func() []string
	getwd          func() (string, error)
	lookPath       func(string) (string, error)
	// exec runs argv[0] at path in place of this process, with env. It returns only when that
	// failed; a test's exec runs a child instead and returns its exit status.
	exec func(path string, argv, env []string) (status int, err error)
	// startDaemon starts blauthd in the background, serving socket, and returns its pid.
	startDaemon func(socket string) (pid int, err error)
}

func osSystem() system {
	return system{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		getenv: os.Getenv, environ: os.Environ, getwd: os.Getwd, lookPath: exec.LookPath,
		exec: func(path string, argv, env []string) (int, error) {
			// Replace this process: the exit status, signals and the terminal pass straight through.
			return 0, syscall.Exec(path, argv, env)
		},
		startDaemon: spawnDaemon,
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
