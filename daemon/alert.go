package daemon

import (
	"context"
	"os"
	"os/exec"
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
	cmd.Env = append(os.Environ(), "BLAUTH_WORKSPACE="+a.Workspace, "BLAUTH_REASON="+a.Reason, "BLAUTH_EXPIRES="+expires,
		"BLAUTH_MESSAGE="+a.Message)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	log := d.log.With().Str("workspace", a.Workspace).Str("reason", a.Reason).Logger()
	if err != nil {
		log.Warn().Err(err).Bytes("output", clipOutput(out)).Msg("notify_command failed")
		return
	}
	log.Debug().Bytes("output", clipOutput(out)).Msg("notify_command ran")
}

// clipOutput keeps the log line of a command's output short.
func clipOutput(b []byte) []byte {
	if len(b) > 2048 {
		return b[:2048]
	}
	return b
}
