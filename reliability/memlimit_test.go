//go:build reliability

package reliability

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memLimit confines one process's memory the way a unit's MemoryMax= does: a memory cgroup of
// its own (v2 or v1), or, where neither can be made, an address-space rlimit (prlimit --as).
type memLimit struct {
	limit int64
	how   string // what the test log says was used
	// dir is the cgroup made for the daemon (removed at the end); "" with prlimit.
	dir string
	v2  bool
}

const cgroupPrefix = "blauth-rel-"

// confineMemory prepares a memory limit of limit bytes for a daemon the test starts with
// daemonOpts.prefix set to lim.prefix(), and removes what it made when the test ends (register
// it before the daemon, so that the daemon is killed first).
func confineMemory(t *testing.T, limit int64) *memLimit {
	t.Helper()
	lim := &memLimit{limit: limit}
	var tried []string
	for _, try := range []func() error{lim.cgroupV2, lim.cgroupV1} {
		err := try()
		if err == nil {
			break
		}
		tried = append(tried, err.Error())
	}
	if lim.dir == "" {
		if _, err := exec.LookPath("prlimit"); err != nil {
			t.Fatalf("no memory cgroup could be made (%s) and prlimit is missing", strings.Join(tried, "; "))
		}
		lim.how = fmt.Sprintf("prlimit --as: address space at start + %d MiB (no memory cgroup could be made: %s)", limit>>20, strings.Join(tried, "; "))
		return lim
	}
	t.Cleanup(func() {
		// The daemon was killed by its own cleanup, which ran first; its group empties as the
		// kernel reaps it.
		if !waitFor(10*time.Second, 20*time.Millisecond, func() bool {
			err := os.Remove(lim.dir)
			return err == nil || errors.Is(err, os.ErrNotExist)
		}) {
			t.Errorf("the cgroup %s could not be removed: %v", lim.dir, os.Remove(lim.dir))
		}
	})
	return lim
}

// prefix is the command that starts the daemon inside the cgroup: a shell moves itself into
// the group, then execs the daemon, whose every allocation is then charged to the group.
func (l *memLimit) prefix() []string {
	if l.dir == "" {
		return nil
	}
	return []string{"sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(l.dir, "cgroup.procs")}
}

// applyAfterStart sets the prlimit fallback on the running daemon: its address space may grow
// by the limit over what it reserved at start (a Go program reserves far more than it uses).
func (l *memLimit) applyAfterStart(t *testing.T, pid int) {
	t.Helper()
	if l.dir != "" {
		procs, err := os.ReadFile(filepath.Join(l.dir, "cgroup.procs"))
		if err != nil || !strings.Contains("\n"+string(procs), "\n"+strconv.Itoa(pid)+"\n") {
			t.Fatalf("the daemon (pid %d) is not in %s: %q %v", pid, l.dir, procs, err)
		}
		return
	}
	vm := procStatusKiB(pid, "VmSize")
	if vm <= 0 {
		t.Fatalf("no VmSize for pid %d", pid)
	}
	as := vm<<10 + l.limit
	if out, err := exec.Command("prlimit", "--pid", strconv.Itoa(pid), fmt.Sprintf("--as=%d:%d", as, as)).CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v: %s", err, out)
	}
}

// peakAndOOM reads the group's peak usage and its count of OOM kills (-1 where unknown).
func (l *memLimit) peakAndOOM() (peak int64, ooms int) {
	if l.dir == "" {
		return -1, -1
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(l.dir, name))
		return strings.TrimSpace(string(b))
	}
	field := func(text, key string) int {
		for _, line := range strings.Split(text, "\n") {
			if k, v, ok := strings.Cut(line, " "); ok && k == key {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return -1
	}
	if l.v2 {
		peak, _ = strconv.ParseInt(read("memory.peak"), 10, 64)
		return peak, field(read("memory.events"), "oom_kill")
	}
	peak, _ = strconv.ParseInt(read("memory.max_usage_in_bytes"), 10, 64)
	return peak, field(read("memory.oom_control"), "oom_kill")
}

// cgroupV2 makes a child group with memory.max on the unified hierarchy: under the test's own
// group where the memory controller can be enabled for children, else under the root.
func (l *memLimit) cgroupV2() error {
	const root = "/sys/fs/cgroup"
	ctrl, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil || !slices.Contains(strings.Fields(string(ctrl)), "memory") {
		return fmt.Errorf("cgroup v2: no memory controller at %s", root)
	}
	var errs []string
	for _, parent := range candidates(root, ownCgroup("")) {
		sub, _ := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
		if !strings.Contains(string(sub), "memory") {
			if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory"), 0o644); err != nil {
				errs = append(errs, fmt.Sprintf("%s: enable memory: %v", parent, err))
				continue
			}
		}
		if err := l.makeGroup(parent, "memory.max", "memory.swap.max"); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		l.v2 = true
		l.how = fmt.Sprintf("cgroup v2 %s, memory.max=%d", l.dir, l.limit)
		return nil
	}
	return fmt.Errorf("cgroup v2: %s", strings.Join(errs, "; "))
}

// cgroupV1 makes a child group with memory.limit_in_bytes (and the same memsw limit, so that
// swap does not widen it) in the v1 memory hierarchy.
func (l *memLimit) cgroupV1() error {
	const root = "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(root, "memory.limit_in_bytes")); err != nil {
		return fmt.Errorf("cgroup v1: no memory controller at %s", root)
	}
	var errs []string
	for _, parent := range candidates(root, ownCgroup("memory")) {
		if err := l.makeGroup(parent, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		l.how = fmt.Sprintf("cgroup v1 %s, memory.limit_in_bytes=%d", l.dir, l.limit)
		return nil
	}
	return fmt.Errorf("cgroup v1: %s", strings.Join(errs, "; "))
}

// makeGroup creates a fresh group under parent and writes the limit into limitFile (and into
// swapFile when it exists: the swap limit of v1 may not be below the memory one, and v2's swap
// allowance is set to 0). Empty groups an earlier, interrupted run left behind are removed first.
func (l *memLimit) makeGroup(parent, limitFile, swapFile string) error {
	if old, _ := filepath.Glob(filepath.Join(parent, cgroupPrefix+"*")); len(old) > 0 {
		for _, g := range old {
			_ = os.Remove(g) // fails, harmlessly, for a group still in use
		}
	}
	dir, err := os.MkdirTemp(parent, cgroupPrefix)
	if err != nil {
		return fmt.Errorf("%s: %v", parent, err)
	}
	write := func(name, v string) error { return os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644) }
	err = write(limitFile, strconv.FormatInt(l.limit, 10))
	if err == nil {
		if _, serr := os.Stat(filepath.Join(dir, swapFile)); serr == nil {
			v := strconv.FormatInt(l.limit, 10)
			if strings.HasSuffix(swapFile, "swap.max") {
				v = "0"
			}
			err = write(swapFile, v)
		}
	}
	if err != nil {
		os.Remove(dir)
		return fmt.Errorf("%s: %v", dir, err)
	}
	l.dir = dir
	return nil
}

// ownCgroup is this process's group in the hierarchy named controller ("" for v2's), relative
// to its root.
func ownCgroup(controller string) string {
	data, _ := os.ReadFile("/proc/self/cgroup")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if controller == "" && f[0] == "0" && f[1] == "" {
			return f[2]
		}
		for _, c := range strings.Split(f[1], ",") {
			if controller != "" && c == controller {
				return f[2]
			}
		}
	}
	return "/"
}

// candidates are the parents to try: the test's own group, then the hierarchy's root.
func candidates(root, own string) []string {
	out := []string{filepath.Join(root, own)}
	if own != "/" && own != "" {
		out = append(out, root)
	}
	return out
}

// procStatusKiB reads one "kB" line of /proc/PID/status (-1 if absent).
func procStatusKiB(pid int, key string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return -1
}
