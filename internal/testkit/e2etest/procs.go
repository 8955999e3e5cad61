package e2etest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// ProcsWithEnv returns the ids of the running processes whose environment holds the entry kv
// (for instance "HOME=" + a test's home), other than this one. It reads /proc, so it works on
// Linux only; elsewhere it returns an error. Processes gone while they are read are ignored.
func ProcsWithEnv(kv string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	want := []byte(kv)
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue // gone, or a kernel thread
		}
		for _, v := range bytes.Split(env, []byte{0}) {
			if bytes.Equal(v, want) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids, nil
}

// CheckNothingLeft fails the test if a process already runs with home's HOME, and registers a
// cleanup that fails it if any process started with that HOME (the daemon, a proxy, a client,
// anything they started) still runs once everything else was cleaned up. Call it before
// starting anything: cleanups run last-registered first.
func CheckNothingLeft(t testing.TB, home *Home) {
	t.Helper()
	before, err := ProcsWithEnv("HOME=" + home.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 0 {
		t.Fatalf("processes %v already run with this test's fresh HOME", before)
	}
	t.Cleanup(func() {
		after, err := ProcsWithEnv("HOME=" + home.Dir)
		if err != nil {
			t.Error(err)
			return
		}
		if len(after) != 0 {
			t.Errorf("processes left running after the test: %v (before: none)", after)
		}
	})
}

// ProcsNaming lists, as "PID COMMAND LINE", the processes other than this one whose command
// line holds s (when s is not ""), or whose /proc/PID/cgroup holds one of cgroupIDs (a
// container's id). Kernel threads, and processes gone while they are read, are left out. It
// reads /proc: on other systems it lists nothing.
func ProcsNaming(s string, cgroupIDs ...string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		line := strings.TrimSpace(string(bytes.ReplaceAll(raw, []byte{0}, []byte{' '})))
		if line == "" {
			continue // a kernel thread, or gone
		}
		hit := s != "" && strings.Contains(line, s)
		if !hit && len(cgroupIDs) > 0 {
			cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
			for _, id := range cgroupIDs {
				if strings.Contains(string(cg), id) {
					hit = true
					break
				}
			}
		}
		if hit {
			out = append(out, fmt.Sprintf("%d %s", pid, line))
		}
	}
	return out
}
