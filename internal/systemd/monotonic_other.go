//go:build !linux

package systemd

// monotonicUsec reports that CLOCK_MONOTONIC is not read on this platform:
// there is no systemd to send it to.
func monotonicUsec() (uint64, bool) { return 0, false }
