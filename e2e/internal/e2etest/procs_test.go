package e2etest

import (
	"os/exec"
	"runtime"
	"slices"
	"testing"
)

func TestProcsWithEnvFindsAChildUntilItEnds(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ProcsWithEnv reads /proc")
	}
	marker := "E2ETEST_MARKER=" + t.Name()
	cmd := exec.Command("sleep", "30")
	cmd.Env = []string{"PATH=/usr/bin:/bin", marker}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pids, err := ProcsWithEnv(marker)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Errorf("ProcsWithEnv(%q) = %v while %d runs, want just it", marker, pids, cmd.Process.Pid)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if pids, err = ProcsWithEnv(marker); err != nil || len(pids) != 0 {
		t.Errorf("ProcsWithEnv(%q) = %v, %v after the child ended, want none", marker, pids, err)
	}
}
