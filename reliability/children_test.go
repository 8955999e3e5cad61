//go:build reliability

package reliability

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/blauth/blauth/ipc"
)

// The test binary doubles as a probe that the cases run as another user (nobody): TestMain
// dispatches on these variables before any test runs.

// ptraceChildEnv makes this test binary, run as another user, probe the process it names:
// read /proc/PID/environ and /proc/PID/mem, and PTRACE_ATTACH to it. It prints one line per probe.
const ptraceChildEnv = "BLAUTH_REL_PROBE_PID"

func ptraceChild() int {
	pid, err := strconv.Atoi(os.Getenv(ptraceChildEnv))
	if err != nil {
		fmt.Println("bad pid")
		return 2
	}
	for _, f := range []string{"environ", "mem"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err == nil {
			fh.Close()
			fmt.Printf("%s: opened\n", f)
		} else {
			fmt.Printf("%s: %v\n", f, errors.Unwrap(err))
		}
	}
	runtime.LockOSThread()
	if err := syscall.PtraceAttach(pid); err != nil {
		fmt.Printf("ptrace: %v\n", err)
		return 0
	}
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WALL, nil)
	_ = syscall.PtraceDetach(pid)
	fmt.Println("ptrace: attached")
	return 0
}

// slowGetChildEnv makes this test binary connect to the socket it names, wait 300ms, then send a
// get with the ipc client, and print the answer's code.
const slowGetChildEnv = "BLAUTH_REL_SLOW_GET_SOCKET"

func slowGetChild() int {
	c, err := ipc.Dial(os.Getenv(slowGetChildEnv), 5*time.Second)
	if err != nil {
		fmt.Printf("dial: %v\n", err)
		return 0
	}
	defer c.Close()
	time.Sleep(300 * time.Millisecond)
	_, err = c.Do(ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet))
	fmt.Printf("code: %s\nerror: %v\n", ipc.ErrorCode(err), err)
	return 0
}
