// Package systemd implements the small part of the systemd service protocol
// that blauthd needs, with the standard library only: socket activation
// (sd_listen_fds), readiness and state notification (sd_notify), the
// service watchdog (sd_watchdog_enabled) and the journal's native protocol
// (sd_journal_send, for structured log fields).
//
// Every function is a no-op that reports "not under systemd" when the
// corresponding environment variables are absent, so a daemon can call them
// unconditionally: the same binary runs under a systemd user manager, under
// systemd-socket-activate, under launchd or from a shell.
//
// The functions read and modify process-wide state (the environment and
// file descriptors 3 and up); Listeners must be called once, early, before
// other goroutines open files. Notify and the helpers built on it are safe
// for concurrent use.
package systemd
