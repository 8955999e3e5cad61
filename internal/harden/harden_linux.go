// Package harden applies process-level protections to blauthd: no core files, and not dumpable,
// so neither a crash nor another process of the same user can read the tokens in its memory.
package harden

import "golang.org/x/sys/unix"

// Process disables core dumps and marks the process not dumpable (which also forbids ptrace by
// other processes of the same user, and makes /proc/PID/mem unreadable to them).
func Process() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return err
	}
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}
