package systemd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notify sends state, one or more newline-separated VARIABLE=value
// assignments such as "READY=1", "STOPPING=1", "WATCHDOG=1" or
// "STATUS=serving 2 workspaces", to the service manager as one datagram on
// the Unix socket named by $NOTIFY_SOCKET (a path, or an abstract socket
// when it starts with '@').
//
// It returns false, nil when NOTIFY_SOCKET is unset or empty: the process is
// not supervised by a service manager that wants notifications. It returns
// true, nil once the datagram has been sent. It does not unset
// NOTIFY_SOCKET: a daemon notifies more than once.
//
// Notify is safe for concurrent use.
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if state == "" {
		return false, errors.New("systemd: notify: empty state")
	}
	if addr[0] != '/' && addr[0] != '@' {
		// systemd also knows vsock: addresses, for virtual machines;
		// they are of no use to a per-user daemon.
		return false, fmt.Errorf("systemd: notify: NOTIFY_SOCKET=%q is neither a path nor an abstract socket", addr)
	}
	// On Linux, the net package maps a leading '@' to the abstract
	// namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err == nil {
		_, err = conn.Write([]byte(state))
		conn.Close()
	}
	if err != nil {
		first, _, _ := strings.Cut(state, "\n")
		return false, fmt.Errorf("systemd: notify %s: %w", first, err)
	}
	return true, nil
}

// Ready tells the service manager that start-up is finished: the socket
// is served (READY=1). With Type=notify, systemd holds units ordered after
// this one until then. It does nothing without a service manager.
func Ready() error {
	_, err := Notify("READY=1")
	return err
}

// Reloading tells the service manager that the daemon is reloading its
// configuration (RELOADING=1 with MONOTONIC_USEC, the CLOCK_MONOTONIC time
// of the reload, which systemd 253 and later use to match the reload with
// its request). Send Ready when the reload is done. It does nothing without
// a service manager.
func Reloading() error {
	state := "RELOADING=1"
	if usec, ok := monotonicUsec(); ok {
		state += "\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10)
	}
	_, err := Notify(state)
	return err
}

// Stopping tells the service manager that the daemon is shutting down
// (STOPPING=1). It does nothing without a service manager.
func Stopping() error {
	_, err := Notify("STOPPING=1")
	return err
}

// WatchdogInterval reports the watchdog timeout that the service manager
// set (WATCHDOG_USEC, from WatchdogSec= in the unit) and whether the
// watchdog is on for this process: WATCHDOG_USEC is a positive number and
// WATCHDOG_PID, when set, is os.Getpid(). The daemon must send WATCHDOG=1
// more often than the interval; RunWatchdog sends it every half interval.
//
// A malformed value counts as "off", as in sd_watchdog_enabled.
func WatchdogInterval() (time.Duration, bool) {
	usecStr := os.Getenv("WATCHDOG_USEC")
	if usecStr == "" {
		return 0, false
	}
	usec, err := strconv.ParseUint(usecStr, 10, 63)
	if err != nil || usec == 0 {
		return 0, false
	}
	if pidStr := os.Getenv("WATCHDOG_PID"); pidStr != "" {
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid != os.Getpid() {
			return 0, false
		}
	}
	// Cap before converting: time.Duration counts nanoseconds in an int64.
	const maxUsec = uint64(1<<63-1) / uint64(time.Microsecond)
	if usec > maxUsec {
		usec = maxUsec
	}
	return time.Duration(usec) * time.Microsecond, true
}

// RunWatchdog sends WATCHDOG=1 to the service manager every half watchdog
// interval until ctx is done, then returns nil. It returns nil at once when
// the watchdog is off or there is no service manager, and the error of the
// first failed notification otherwise; the service manager will then kill
// and, with Restart=on-failure, restart the daemon once the interval has
// passed.
func RunWatchdog(ctx context.Context) error {
	interval, ok := WatchdogInterval()
	if !ok || os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	// The first ping goes at once (the service manager's timer already runs), then one every
	// half interval (at least 500ns: the interval is 1µs or more).
	ticker := time.NewTicker(interval / 2)
	defer ticker.Stop()
	for {
		if _, err := Notify("WATCHDOG=1"); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}
