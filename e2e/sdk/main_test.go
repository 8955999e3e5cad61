//go:build sdk

package sdk

import (
	"fmt"
	"os"
	"testing"

	"github.com/blauth/blauth/e2e/internal/e2etest"
)

var (
	moduleRoot string
	bins       e2etest.Binaries
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	var err error
	if moduleRoot, err = e2etest.ModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/sdk:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "e2ebin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/sdk:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if bins, err = e2etest.BuildBinaries(moduleRoot, dir, "e2e"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/sdk:", err)
		return 1
	}
	return m.Run()
}
