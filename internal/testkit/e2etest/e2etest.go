// Package e2etest is the harness of blauth's end-to-end suites (e2e/…): it builds the real
// blauthd and blauth-helper binaries, starts the fake Blaxel API (internal/testkit/blaxeltest), lays out
// a private HOME with a bl CLI config, runs the real daemon binary against them, and runs the
// real Blaxel TypeScript SDK (pinned in e2e/node) as child processes. Everything it starts
// listens on loopback or Unix sockets in temporary directories, and is stopped when the test
// ends; ProcsWithEnv lets a test check that nothing it started is left running.
//
// Functions that take a testing.TB fail that test on error; none is safe to call after the
// test has ended.
package e2etest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

// ModuleRoot returns the directory of blauth's go.mod, searched upwards from the working
// directory (a test runs in its package's directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// InCI reports whether the run is CI's (CI=true), where a missing real component fails a test
// instead of skipping it.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing fails the test in CI and skips it elsewhere, saying what is missing and how to get it.
func Missing(t testing.TB, what, fix string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is missing (%s); CI must have it", what, fix)
	}
	t.Skipf("%s is missing (%s)", what, fix)
}

// ShortTempDir is testkit.ShortTempDir: a directory with a path short enough for a socket.
func ShortTempDir(t testing.TB, prefix string) string { return testkit.ShortTempDir(t, prefix) }

// Binaries are blauthd and blauth-helper built from this checkout.
type Binaries struct {
	Dir     string
	Blauthd string
	Helper  string
}

// BuildBinaries builds blauthd and blauth-helper from moduleRoot into dir, as `make build` does
// (CGO off, trimmed paths), with the given version string. Call it once, from TestMain.
func BuildBinaries(moduleRoot, dir, version string) (Binaries, error) {
	if err := GoBuild(moduleRoot, "-ldflags", "-X main.version="+version,
		"-o", dir+string(filepath.Separator), "./cmd/blauthd", "./cmd/blauth-helper"); err != nil {
		return Binaries{}, err
	}
	return Binaries{Dir: dir, Blauthd: filepath.Join(dir, "blauthd"), Helper: filepath.Join(dir, "blauth-helper")}, nil
}

// GoBuild runs `go build -trimpath args...` in moduleRoot with CGO off, as `make build` does.
func GoBuild(moduleRoot string, args ...string) error {
	cmd := exec.Command("go", append([]string{"build", "-trimpath"}, args...)...)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// RunMain is the TestMain of a suite that needs the binaries: it finds the module root, builds
// blauthd and blauth-helper (version "e2e") into a temporary directory removed afterwards, calls
// setup (nil for none) with both to build or find what else the suite needs, and runs the tests.
// It returns the exit code; errors are printed prefixed with suite.
func RunMain(m *testing.M, suite string, setup func(moduleRoot string, bins Binaries) error) int {
	root, err := ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, suite+":", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "e2ebin")
	if err != nil {
		fmt.Fprintln(os.Stderr, suite+":", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins, err := BuildBinaries(root, dir, "e2e")
	if err == nil && setup != nil {
		err = setup(root, bins)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, suite+":", err)
		return 1
	}
	return m.Run()
}

// StartAPI starts the fake Blaxel API with tokens living ttl, refresh tokens rotating, and
// refresh grants without client_id accepted (Blaxel's TypeScript SDK sends none). It is closed
// when the test ends.
func StartAPI(t testing.TB, ttl time.Duration) *blaxeltest.Server {
	t.Helper()
	api := blaxeltest.New(ttl)
	api.SetRotate(true)
	api.SetClientIDOptional(true)
	t.Cleanup(func() {
		api.CloseClientConnections()
		api.Close()
	})
	return api
}

// Home is a private HOME for the processes of one test: HOME itself, ~/.blaxel/config.yaml (the
// bl CLI's config, always at that path) and a runtime directory for XDG_RUNTIME_DIR.
type Home struct {
	Dir        string // $HOME
	BLConfig   string // $HOME/.blaxel/config.yaml
	RuntimeDir string // for XDG_RUNTIME_DIR, 0700
	Work       string // an empty working directory for clients (no .env, no blaxel.toml)
}

// NewHome lays out an empty Home in a short temporary directory.
func NewHome(t testing.TB) *Home {
	t.Helper()
	base := ShortTempDir(t, "e2e")
	h := &Home{Dir: filepath.Join(base, "home"), RuntimeDir: filepath.Join(base, "run"), Work: filepath.Join(base, "work")}
	h.BLConfig = filepath.Join(h.Dir, ".blaxel", "config.yaml")
	for _, d := range []string{filepath.Dir(h.BLConfig), h.RuntimeDir, h.Work} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// WriteBLConfig writes text as ~/.blaxel/config.yaml, mode 0600, as bl leaves it.
func (h *Home) WriteBLConfig(t testing.TB, text string) {
	t.Helper()
	if err := os.WriteFile(h.BLConfig, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ReadBLConfig returns the text of ~/.blaxel/config.yaml.
func (h *Home) ReadBLConfig(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(h.BLConfig)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// HomeEnv is the environment every process of h starts from: PATH, HOME and TZ, nothing else of
// the test's own environment (no BL_* variable leaks in).
func (h *Home) HomeEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + h.Dir, "TZ=UTC"}
}
