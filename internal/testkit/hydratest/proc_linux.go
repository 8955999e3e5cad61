package hydratest

import (
	"os/exec"
	"syscall"
)

// setProcAttr asks the kernel to kill Hydra if the test process dies without
// running its cleanups (a panic in another goroutine, a SIGKILL from a
// timeout), so no server is left behind.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
