// Command rusage runs a command and reports its peak RSS: `rusage CMD [ARGS...]` passes the
// command's standard streams through, exits with its status, and prints
// "rusage: maxrss_kib=N" on standard error when it ends.
//
// It exists because Linux counts the RSS of the process that execs into a child's ru_maxrss
// (exec records the old memory's high-water mark, and Go forks with CLONE_VM): measured from
// benchreport, whose RSS is tens of MiB, every child would seem to use that much. This program
// is small, so the floor it adds is small, and benchreport measures that floor (rusage
// /bin/true) in the same run.
package main

import (
	"os"
	"strconv"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		_, _ = os.Stderr.WriteString("usage: rusage CMD [ARGS...]\n")
		os.Exit(2)
	}
	pid, err := syscall.ForkExec(os.Args[1], os.Args[1:], &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
	})
	if err != nil {
		_, _ = os.Stderr.WriteString("rusage: " + err.Error() + "\n")
		os.Exit(127)
	}
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	for {
		_, err = syscall.Wait4(pid, &ws, 0, &ru)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		_, _ = os.Stderr.WriteString("rusage: " + err.Error() + "\n")
		os.Exit(127)
	}
	_, _ = os.Stderr.WriteString("rusage: maxrss_kib=" + strconv.FormatInt(int64(ru.Maxrss), 10) + "\n")
	os.Exit(ws.ExitStatus())
}
