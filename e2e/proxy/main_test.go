//go:build sdk

package proxy

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
	proxyBin   string // blauth-proxy, beside blauth-helper as it is installed
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	var err error
	if moduleRoot, err = e2etest.ModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/proxy:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "e2ebin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/proxy:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if bins, err = e2etest.BuildBinaries(moduleRoot, dir, "e2e"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/proxy:", err)
		return 1
	}
	// blauth-proxy, built the same way, where the helper looks for it first: beside itself.
	proxyBin = filepath.Join(dir, "blauth-proxy")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=e2e", "-o", proxyBin, "./cmd/blauth-proxy")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e/proxy: go build blauth-proxy: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
