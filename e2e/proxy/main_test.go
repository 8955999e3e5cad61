//go:build sdk

package proxy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/blauth/blauth/internal/testkit/e2etest"
)

var (
	moduleRoot string
	bins       e2etest.Binaries
	proxyBin   string // blauth-proxy, beside blauth-helper as it is installed
)

func TestMain(m *testing.M) {
	os.Exit(e2etest.RunMain(m, "e2e/proxy", func(root string, b e2etest.Binaries) error {
		moduleRoot, bins = root, b
		// blauth-proxy, built the same way, where the helper looks for it first: beside itself.
		proxyBin = filepath.Join(b.Dir, "blauth-proxy")
		return e2etest.GoBuild(root, "-ldflags", "-X main.version=e2e", "-o", proxyBin, "./cmd/blauth-proxy")
	}))
}
