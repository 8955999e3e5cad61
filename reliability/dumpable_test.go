//go:build reliability

package reliability

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// probeAs runs the probe against pid as nobody and returns its lines by probe name.
func probeAs(t *testing.T, pid int) map[string]string {
	t.Helper()
	if selfBin == "" {
		t.Fatal("no copy of the test binary to run as nobody")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", append(asNobody[1:], selfBin)...)
	cmd.Env = []string{ptraceChildEnv + "=" + strconv.Itoa(pid)}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe as nobody: %v\n%s", err, out)
	}
	res := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			res[k] = v
		}
	}
	return res
}

func procOwner(t *testing.T, pid int, file string) (uint32, uint32) {
	t.Helper()
	fi, err := os.Stat(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no Uid in status")
	return -1
}

// coreLimit returns the soft and hard "Max core file size" of /proc/PID/limits.
func coreLimit(t *testing.T, pid int) (string, string) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Max core file size") {
			f := strings.Fields(strings.TrimPrefix(l, "Max core file size"))
			if len(f) >= 2 {
				return f[0], f[1]
			}
		}
	}
	t.Fatal("no core limit in /proc/PID/limits")
	return "", ""
}

// TestReliabilityNotDumpable: blauthd, run as an ordinary user (nobody), cannot be read or traced
// by another process of that same user, and writes no core file.
func TestReliabilityNotDumpable(t *testing.T) {
	const ws = "dump-ws"
	api := newFakeAPI(t, time.Hour)
	cc := api.addClient("sa-dump", "secret-dump-"+randHex(12))
	base := shortDir(t)
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(base, "home")
	runDir := filepath.Join(base, "run")
	for _, d := range []string{home, runDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, nobodyUID, nobodyGID); err != nil {
			t.Fatal(err)
		}
	}
	socket := filepath.Join(runDir, "blauthd.sock")
	d := startDaemon(t, daemonOpts{api: api, home: home, socket: socket, asNobody: true, noWait: true,
		env: []string{"BL_WORKSPACE=" + ws, "BL_CLIENT_CREDENTIALS=" + cc}})
	if !waitFor(10*time.Second, 20*time.Millisecond, func() bool { return d.logHas("blauthd serving") || d.exited() }) || d.exited() {
		t.Fatalf("blauthd as nobody did not start:\n%s", tail(d.logPath, 10))
	}
	if uid := procUID(t, d.pid); uid != nobodyUID {
		t.Fatalf("the daemon runs as uid %d, not nobody", uid)
	}
	// nobody is served by its own daemon (so the probes below face a working daemon).
	r := runHelper(t, socket, base, nil, asNobody, helperBin, "token", ws)
	if r.code != 0 {
		t.Fatalf("nobody's own daemon does not serve it: exit %d: %s", r.code, r.stderr)
	}
	tok := strings.TrimSpace(r.stdout)
	if err := api.checkToken(tok, time.Time{}, time.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}

	// A control: an ordinary, dumpable process of nobody, which the same probes can read and trace.
	ctl := exec.Command("setpriv", append(asNobody[1:], "sleep", "60")...)
	if err := ctl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctl.Process.Kill(); _ = ctl.Wait() })
	// Between setpriv's setresuid and its exec of sleep the process is not dumpable either (a
	// change of uid clears the flag until the next exec): wait for sleep itself.
	if !waitFor(5*time.Second, 10*time.Millisecond, func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ctl.Process.Pid))
		return strings.TrimSpace(string(comm)) == "sleep"
	}) {
		t.Fatal("the control process did not exec sleep")
	}
	if uid := procUID(t, ctl.Process.Pid); uid != nobodyUID {
		t.Fatalf("the control process runs as %d, not nobody", uid)
	}

	// dumpable=0 makes the kernel give the process's /proc files to root.
	for _, f := range []string{"environ", "mem"} {
		if uid, gid := procOwner(t, d.pid, f); uid != 0 || gid != 0 {
			t.Errorf("/proc/PID/%s of blauthd is owned by %d:%d, want 0:0 (not dumpable)", f, uid, gid)
		}
		if uid, _ := procOwner(t, ctl.Process.Pid, f); uid != nobodyUID {
			t.Errorf("control: /proc/PID/%s of a dumpable process is owned by %d, want %d", f, uid, nobodyUID)
		}
	}

	// Same user, another process: cat /proc/PID/environ.
	catAs := func(pid int) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "setpriv", append(asNobody[1:], "cat", fmt.Sprintf("/proc/%d/environ", pid))...).CombinedOutput()
		return string(out), err
	}
	out, err := catAs(d.pid)
	if err == nil || strings.Contains(out, "BL_CLIENT_CREDENTIALS") {
		t.Errorf("nobody read blauthd's environment with cat")
	}
	t.Logf("FIGURE dumpable: cat /proc/PID/environ as the daemon's own uid: %s", strings.TrimSpace(out))
	if out, err := catAs(ctl.Process.Pid); err != nil {
		t.Errorf("control: nobody cannot cat its own sleep's environ: %v %s", err, out)
	}

	// The probe: open environ and mem, PTRACE_ATTACH.
	got := probeAs(t, d.pid)
	for _, k := range []string{"environ", "mem", "ptrace"} {
		if v := got[k]; v == "" || v == "opened" || v == "attached" {
			t.Errorf("nobody could %s blauthd: %q", map[string]string{"environ": "open the environ of", "mem": "open the memory of", "ptrace": "ptrace-attach to"}[k], v)
		}
	}
	t.Logf("FIGURE dumpable: probes on blauthd as nobody: environ: %s; mem: %s; ptrace: %s", got["environ"], got["mem"], got["ptrace"])
	ctlGot := probeAs(t, ctl.Process.Pid)
	if ctlGot["environ"] != "opened" || ctlGot["ptrace"] != "attached" {
		t.Errorf("control: the probe cannot read or trace an ordinary process of nobody (%v): it proves nothing", ctlGot)
	}
	t.Logf("FIGURE dumpable: control (sleep as nobody): environ: %s; mem: %s; ptrace: %s", ctlGot["environ"], ctlGot["mem"], ctlGot["ptrace"])

	// No core file: RLIMIT_CORE is 0, soft and hard.
	if soft, hard := coreLimit(t, d.pid); soft != "0" || hard != "0" {
		t.Errorf("blauthd's core file limit is %s/%s, want 0/0", soft, hard)
	} else {
		t.Logf("FIGURE dumpable: Max core file size %s %s", soft, hard)
	}

	// The same holds for a daemon run as root (the other cases' daemons).
	_, rootd := serviceAccountDaemon(t, "dump-root", time.Hour)
	if soft, hard := coreLimit(t, rootd.pid); soft != "0" || hard != "0" {
		t.Errorf("blauthd as root: core file limit %s/%s, want 0/0", soft, hard)
	}
	rootd.stop()

	// Still serving.
	r = runHelper(t, socket, base, nil, asNobody, helperBin, "token", ws)
	if r.code != 0 || api.checkToken(strings.TrimSpace(r.stdout), time.Time{}, time.Now(), time.Minute) != nil {
		t.Fatalf("blauthd as nobody stopped serving: exit %d: %s", r.code, r.stderr)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code, err := d.waitExit(15 * time.Second); err != nil || code != 0 {
		t.Errorf("blauthd as nobody did not stop cleanly: %d %v", code, err)
	}
}
