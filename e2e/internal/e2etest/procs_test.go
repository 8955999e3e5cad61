package e2etest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
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

func TestProcsNamingFindsAChildByItsCommandLineUntilItEnds(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ProcsNaming reads /proc")
	}
	marker := "e2etest-marker-" + strconv.Itoa(os.Getpid())
	// marker is sh's $0, on its command line. The script is a builtin waiting on a pipe that
	// never delivers: sh forks no child, which would carry the same command line between its
	// fork and its exec (a loaded machine shows it).
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	cmd := exec.Command("sh", "-c", "read line", marker)
	cmd.Stdin = r
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d sh -c read line %s", cmd.Process.Pid, marker)
	if got := ProcsNaming(marker); !slices.Equal(got, []string{want}) {
		t.Errorf("ProcsNaming(%q) = %q while the child runs, want [%q]", marker, got, want)
	}
	if got := ProcsNaming(""); len(got) != 0 {
		t.Errorf("ProcsNaming(\"\") = %q, want none (an empty string names nothing)", got)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if got := ProcsNaming(marker); len(got) != 0 {
		t.Errorf("ProcsNaming(%q) = %q after the child ended, want none", marker, got)
	}
}
