//go:build sdk

package sdk

import (
	"os"
	"testing"

	"github.com/blauth/blauth/internal/testkit/e2etest"
)

var (
	moduleRoot string
	bins       e2etest.Binaries
)

func TestMain(m *testing.M) {
	os.Exit(e2etest.RunMain(m, "e2e/sdk", func(root string, b e2etest.Binaries) error {
		moduleRoot, bins = root, b
		return nil
	}))
}
