//go:build !linux

// Package harden applies process-level protections to blauthd: no core files, and not dumpable,
// so neither a crash nor another process of the same user can read the tokens in its memory.
package harden

import "golang.org/x/sys/unix"

// Process disables core dumps. (Other systems have no portable "not dumpable" switch; on macOS,
// hardened-runtime signing is what forbids same-user debugging.)
func Process() error {
	return unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0})
}
