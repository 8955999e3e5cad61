//go:build reliability

package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Binaries built once for the whole run, in a directory every user may enter (the peer and
// dumpability cases run them as nobody).
var (
	binDir     string
	blauthdBin string
	helperBin  string
	selfBin    string // a copy of this test binary, for children that must run as another user
	moduleRoot string
	logDir     string // every daemon's log of the run, scanned for secrets at the end
)

func TestMain(m *testing.M) {
	// Children: this binary re-run as another user to probe a daemon.
	if os.Getenv(ptraceChildEnv) != "" {
		os.Exit(ptraceChild())
	}
	if os.Getenv(slowGetChildEnv) != "" {
		os.Exit(slowGetChild())
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	if moduleRoot, err = filepath.Abs(".."); err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	if binDir, err = os.MkdirTemp("", "relbin"); err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	if logDir, err = os.MkdirTemp("", "rellog"); err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	keep := os.Getenv("BLAUTH_REL_KEEP_LOGS") != ""
	if !keep {
		defer os.RemoveAll(logDir)
	}
	// Other users (nobody) run these binaries: every path component must be 0755.
	_ = os.Chmod(binDir, 0o755)
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=reliability",
		"-o", binDir+string(filepath.Separator), "./cmd/blauthd", "./cmd/blauth-helper")
	build.Dir = moduleRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "reliability: building the binaries failed: %v\n%s", err, out)
		return 1
	}
	blauthdBin = filepath.Join(binDir, "blauthd")
	helperBin = filepath.Join(binDir, "blauth-helper")
	if self, err := os.Executable(); err == nil {
		selfBin = filepath.Join(binDir, "reliability.test")
		if err := copyFile(self, selfBin, 0o755); err != nil {
			selfBin = ""
		}
	}
	code := m.Run()
	if keep {
		fmt.Fprintf(os.Stderr, "reliability: daemon logs kept in %s\n", logDir)
	}
	return code
}

func copyFile(from, to string, mode os.FileMode) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		return err
	}
	return os.Chmod(to, mode)
}
