package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/blauth/blauth/ipc"
)

// spawnDaemon starts blauthd in the background, in its own session, as git's credential-cache
// starts its daemon, and returns its pid. The daemon gets this environment minus every BL_*
// variable: each request carries the caller's own, so one shell's credentials, workspace or API
// endpoint (BL_API_URL, BL_ENV) never become the daemon's, serving every later caller or
// redirecting the secrets the daemon holds to another host. It is what a daemon started by
// systemd sees, too.
func spawnDaemon(socket string) (int, error) {
	// The daemon runs in /, so a relative socket path must be made absolute here.
	socket, err := filepath.Abs(socket)
	if err != nil {
		return 0, err
	}
	bin := os.Getenv("BLAUTH_DAEMON")
	if bin == "" {
		if bin, err = installed("blauthd", exec.LookPath); err != nil {
			return 0, err
		}
	}
	dir := filepath.Dir(socket)
	if err := ipc.PrepareSocketDir(dir); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "blauthd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--socket", socket, "--log-format", "json")
	cmd.Env = append(daemonEnv(os.Environ()), "BLAUTH_MANAGER="+ipc.ManagerSpawned)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	return pid, cmd.Process.Release()
}

func daemonEnv(environ []string) []string {
	out := environ[:0:0]
	for _, e := range environ {
		k, _, _ := strings.Cut(e, "=")
		if strings.HasPrefix(k, "BL_") || k == "BLAUTH_NO_SPAWN" || k == "BLAUTH_MANAGER" {
			continue
		}
		out = append(out, e)
	}
	return out
}

// installed finds the program name as the helper finds blauthd and blauth-proxy when no
// variable names it: the executable file of that name in the helper's own directory, else
// lookPath's on PATH.
func installed(name string, lookPath func(string) (string, error)) (string, error) {
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), name); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := lookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s is not installed next to blauth-helper nor on PATH", name)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}
