package systemd

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listenNotify creates a unixgram socket like the one systemd creates for
// a service, points NOTIFY_SOCKET at it and returns it.
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on notify socket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return conn
}

// receive reads one datagram, failing the test after a bounded wait.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifyWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	for name, f := range map[string]func() error{"Ready": Ready, "Reloading": Reloading, "Stopping": Stopping} {
		if err := f(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET: %v", name, err)
		}
	}
	sent, err := Notify("READY=1")
	if sent || err != nil {
		t.Errorf("Notify without NOTIFY_SOCKET = %v, %v; want false, nil", sent, err)
	}
}

func TestNotifySendsExactDatagrams(t *testing.T) {
	conn := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"Ready", Ready, "READY=1"},
		{"Stopping", Stopping, "STOPPING=1"},
		{"Notify status", func() error { _, err := Notify("STATUS=serving 2 workspaces"); return err }, "STATUS=serving 2 workspaces"},
		{"Notify several lines", func() error { _, err := Notify("READY=1\nSTATUS=ok"); return err }, "READY=1\nSTATUS=ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(); err != nil {
				t.Fatal(err)
			}
			if got := receive(t, conn); got != tt.want {
				t.Errorf("datagram = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNotifyReportsSent(t *testing.T) {
	conn := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	sent, err := Notify("WATCHDOG=1")
	if !sent || err != nil {
		t.Fatalf("Notify = %v, %v; want true, nil", sent, err)
	}
	if got := receive(t, conn); got != "WATCHDOG=1" {
		t.Errorf("datagram = %q", got)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("abstract sockets are a Linux feature")
	}
	conn := listenNotify(t, fmt.Sprintf("@blauth-systemd-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, conn); got != "READY=1" {
		t.Errorf("datagram = %q, want READY=1", got)
	}
}

func TestNotifyErrors(t *testing.T) {
	tests := []struct {
		name, socket, state string
	}{
		{"no listener", filepath.Join(t.TempDir(), "absent"), "READY=1"},
		{"vsock address", "vsock:2:1234", "READY=1"},
		{"relative path", "notify", "READY=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tt.socket)
			sent, err := Notify(tt.state)
			if sent || err == nil {
				t.Fatalf("Notify = %v, %v; want false and an error", sent, err)
			}
			if !strings.HasPrefix(err.Error(), "systemd: notify") {
				t.Errorf("error %q does not say what was being done", err)
			}
		})
	}
	t.Run("empty state", func(t *testing.T) {
		listenNotify(t, filepath.Join(t.TempDir(), "notify"))
		if _, err := Notify(""); err == nil {
			t.Fatal("Notify(\"\") succeeded")
		}
	})
}

func TestReloadingSendsMonotonicTime(t *testing.T) {
	conn := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	var prev uint64
	for i := range 2 {
		if err := Reloading(); err != nil {
			t.Fatal(err)
		}
		got := receive(t, conn)
		if runtime.GOOS != "linux" {
			if got != "RELOADING=1" {
				t.Fatalf("datagram = %q, want RELOADING=1", got)
			}
			return
		}
		first, second, ok := strings.Cut(got, "\n")
		if first != "RELOADING=1" || !ok || !strings.HasPrefix(second, "MONOTONIC_USEC=") {
			t.Fatalf("datagram = %q, want RELOADING=1 then MONOTONIC_USEC=…", got)
		}
		usec, err := strconv.ParseUint(strings.TrimPrefix(second, "MONOTONIC_USEC="), 10, 64)
		if err != nil || usec == 0 {
			t.Fatalf("MONOTONIC_USEC in %q is not a positive number", got)
		}
		if i > 0 && usec < prev {
			t.Errorf("MONOTONIC_USEC went back from %d to %d", prev, usec)
		}
		prev = usec
	}
	// CLOCK_MONOTONIC and /proc/uptime both count from boot; uptime also
	// counts suspended time, so it can only be ahead.
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		up, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
		if err == nil && float64(prev)/1e6 > up+1 {
			t.Errorf("MONOTONIC_USEC %d is past the uptime %.2f s", prev, up)
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	tests := []struct {
		name, usec, pid string
		want            time.Duration
		wantOK          bool
	}{
		{"unset", "", "", 0, false},
		{"no pid", "30000000", "", 30 * time.Second, true},
		{"our pid", "5000000", pid, 5 * time.Second, true},
		{"other pid", "5000000", strconv.Itoa(os.Getpid() + 1), 0, false},
		{"malformed pid", "5000000", "me", 0, false},
		{"zero", "0", pid, 0, false},
		{"negative", "-1", pid, 0, false},
		{"malformed", "30s", pid, 0, false},
		{"huge", "18446744073709551615", pid, 0, false},
		{"largest", "9223372036854775807", pid, time.Duration(1<<63 - 1).Truncate(time.Microsecond), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			got, ok := WatchdogInterval()
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("WatchdogInterval() = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRunWatchdogPings(t *testing.T) {
	conn := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	t.Setenv("WATCHDOG_USEC", "40000") // 40 ms: a ping every 20 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWatchdog(ctx) }()
	start := time.Now()
	for range 3 {
		if got := receive(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("datagram = %q, want WATCHDOG=1", got)
		}
	}
	// The first ping is immediate, the next two come 20 ms apart.
	if elapsed := time.Since(start); elapsed < 30*time.Millisecond {
		t.Errorf("three pings in %v: sent faster than every half interval", elapsed)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunWatchdog after cancel = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunWatchdog did not return after its context was cancelled")
	}
}

func TestRunWatchdogOff(t *testing.T) {
	tests := []struct {
		name, socket, usec string
	}{
		{"no watchdog", "set", ""},
		{"no notify socket", "", "1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.socket != "" {
				listenNotify(t, filepath.Join(t.TempDir(), "notify"))
			} else {
				t.Setenv("NOTIFY_SOCKET", "")
			}
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", "")
			done := make(chan error, 1)
			go func() { done <- RunWatchdog(context.Background()) }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("RunWatchdog = %v, want nil", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("RunWatchdog ran although the watchdog is off")
			}
		})
	}
}

func TestRunWatchdogReportsFailure(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := RunWatchdog(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("RunWatchdog with a missing socket = %v, want an error at once", err)
	}
}
