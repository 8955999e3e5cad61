package daemon

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/blauth/blauth/daemon/internal/broker"
)

// Bounds of the notify command: how long one run may take, and how many alerts may wait
// for the one running (more are dropped, and said so in the log).
const (
	notifyTimeout = 30 * time.Second
	notifyQueue   = 16
)

// alerts returns what the broker calls when a credential can no longer be refreshed: the
// broker logs the alert itself; this runs the notify command, one run at a time, each bounded
// in time, with what happened in its environment and no secret anywhere.
func (d *Daemon) alerts() func(broker.Alert) {
	if d.cfg.NotifyCommand == "" {
		return nil
	}
	queue := make(chan broker.Alert, notifyQueue)
	go func() {
		for {
			select {
			case <-d.life.Done():
				return
			case a := <-queue:
				d.notify(a)
			}
		}
	}()
	return func(a broker.Alert) {
		select {
		case queue <- a:
		default:
			d.log.Warn().Str("workspace", a.Workspace).Msg("notify_command is behind; this alert was not passed to it")
		}
	}
}

// notify runs the notify command for a.
func (d *Daemon) notify(a broker.Alert) {
	ctx, cancel := context.WithTimeout(d.life, notifyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", d.cfg.NotifyCommand)
	expires := ""
	if !a.Expires.IsZero() {
		expires = a.Expires.UTC().Format(time.RFC3339)
	}
	cmd.Env = append(notifyEnv(d.cfg.Environ), "BLAUTH_WORKSPACE="+a.Workspace, "BLAUTH_REASON="+a.Reason, "BLAUTH_EXPIRES="+expires,
		"BLAUTH_MESSAGE="+a.Message)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	out = out[:min(len(out), 2048)] // the log line stays short
	log := d.log.With().Str("workspace", a.Workspace).Str("reason", a.Reason).Logger()
	if err != nil {
		log.Warn().Err(err).Bytes("output", out).Msg("notify_command failed")
		return
	}
	log.Debug().Bytes("output", out).Msg("notify_command ran")
}

// notifyEnv is the daemon's environment without what could be a secret: every BL_ and BLAUTH_
// variable (credentials, and the OAuth client's secret) and any other whose name says it holds a
// key, a token, a secret, a password or credentials. The notify command is told what happened, not
// handed what the daemon holds.
func notifyEnv(environ []string) []string {
	env := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		secret := func(w string) bool { return strings.Contains(upper, w) }
		if !strings.HasPrefix(upper, "BL_") && !strings.HasPrefix(upper, "BLAUTH_") && !slices.ContainsFunc(secretWords, secret) {
			env = append(env, kv)
		}
	}
	return env
}

// secretWords are the words of a variable's name that say it may hold a secret.
var secretWords = []string{"KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"}
