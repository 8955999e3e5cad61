//go:build sdk

package clients

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/blauth/blauth/internal/testkit/e2etest"
)

var (
	moduleRoot string
	bins       e2etest.Binaries
	goCaller   string // the built e2e/clients/gocaller
)

func TestMain(m *testing.M) {
	os.Exit(e2etest.RunMain(m, "e2e/clients", func(root string, b e2etest.Binaries) error {
		moduleRoot, bins = root, b
		goCaller = filepath.Join(b.Dir, "gocaller")
		return e2etest.GoBuild(root, "-o", goCaller, "./e2e/clients/gocaller")
	}))
}
