//go:build sdk

package clients

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/blauth/blauth/e2e/internal/e2etest"
)

var (
	moduleRoot string
	bins       e2etest.Binaries
	goCaller   string // the built e2e/clients/gocaller
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	var err error
	if moduleRoot, err = e2etest.ModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/clients:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "e2ebin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/clients:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if bins, err = e2etest.BuildBinaries(moduleRoot, dir, "e2e"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/clients:", err)
		return 1
	}
	goCaller = filepath.Join(dir, "gocaller")
	cmd := exec.Command("go", "build", "-trimpath", "-o", goCaller, "./e2e/clients/gocaller")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e/clients: go build gocaller: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
