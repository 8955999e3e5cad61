package systemd

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// listenFDsStart is the first file descriptor that systemd passes
// (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// Listeners returns the listening sockets passed by systemd socket
// activation, in the order systemd passed them (the order of the Listen*=
// lines of the socket unit).
//
// The sockets are taken only when LISTEN_PID equals os.Getpid(); LISTEN_FDS
// gives their number, starting at file descriptor 3, and the optional
// LISTEN_FDNAMES their colon-separated names (FileDescriptorName= in the
// socket unit, used as the name of the underlying file). Whatever the
// outcome, Listeners unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES so that
// child processes do not inherit them, and it marks the passed descriptors
// close-on-exec.
//
// It returns nil, nil when the process was not socket-activated, and an
// error when the variables are malformed or a passed descriptor is not a
// listening stream socket (Accept=yes passes connected sockets: blauthd's
// socket unit must say Accept=no). On error no listener is returned and
// descriptors that are not listening sockets are left alone.
//
// Call it once: the descriptors are taken over by the returned listeners and
// a second call finds the variables gone.
func Listeners() ([]net.Listener, error) {
	pidStr, hasPID := os.LookupEnv("LISTEN_PID")
	fdsStr, hasFDs := os.LookupEnv("LISTEN_FDS")
	names := os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")

	if !hasPID || !hasFDs {
		return nil, nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(pidStr))
	if err != nil {
		return nil, fmt.Errorf("systemd: socket activation: LISTEN_PID=%q is not a process id", pidStr)
	}
	if pid != os.Getpid() {
		// The sockets were meant for another process (our parent,
		// typically): they are not ours to take.
		return nil, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(fdsStr))
	if err != nil || n < 0 {
		return nil, fmt.Errorf("systemd: socket activation: LISTEN_FDS=%q is not a count of file descriptors", fdsStr)
	}
	if n == 0 {
		return nil, nil
	}
	return takeListeners(n, strings.Split(names, ":")) // "" splits to [""]: fdName's default
}

// fdName returns the name systemd gave to the i-th passed descriptor, or a
// name in the style of sd_listen_fds_with_names when there is none.
func fdName(names []string, i int) string {
	if i < len(names) && names[i] != "" {
		return names[i]
	}
	return "LISTEN_FD_" + strconv.Itoa(listenFDsStart+i)
}
