//go:build linux || darwin

package proxy

import (
	"os"
	"syscall"
	"unsafe"
)

// typedAtTerminal reports whether this process has a controlling terminal whose foreground
// process group is its own: a SIGINT it receives then most likely came from Ctrl-C, which the
// terminal delivers to the whole group, the child included.
func typedAtTerminal() bool {
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return false
	}
	defer tty.Close()
	var pgrp int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, tty.Fd(), uintptr(syscall.TIOCGPGRP), uintptr(unsafe.Pointer(&pgrp))); errno != 0 {
		return false
	}
	return int(pgrp) == syscall.Getpgrp()
}
