//go:build linux

package systemd

import (
	"syscall"
	"unsafe"
)

// clockMonotonic is CLOCK_MONOTONIC from <time.h>, the clock that systemd
// reads MONOTONIC_USEC against.
const clockMonotonic = 1

// monotonicUsec returns CLOCK_MONOTONIC in microseconds. Go's own
// monotonic clock reading is not exposed, and the syscall package has no
// ClockGettime, so this makes the system call directly.
func monotonicUsec() (uint64, bool) {
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		return 0, false
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3, true
}
