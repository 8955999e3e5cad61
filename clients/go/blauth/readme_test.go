package blauth

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The example of README.md, built and run as a reader would paste it into a main.go of their
// own: only the API's URL is pointed at the fake Blaxel API. It finds the daemon as every client
// does (BLAUTH_SOCKET here), with no BL_* variable and no .env of its own.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) != 1 {
		t.Fatalf("README.md holds %d go blocks, want its one example", len(blocks))
	}
	w := newWorld(t, 0)
	w.startDaemon(t)
	dir := t.TempDir()
	src := strings.ReplaceAll(string(blocks[0][1]), "https://api.blaxel.ai/v0", w.api.Base)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "example")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, filepath.Join(dir, "main.go")).CombinedOutput(); err != nil {
		t.Fatalf("the example does not build: %v\n%s", err, out)
	}
	run := exec.CommandContext(ctx, bin)
	run.Dir = dir
	run.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "BLAUTH_SOCKET=" + w.socket}
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	if err := run.Run(); err != nil || stdout.String() != "200 OK for workspace "+workspace+"\n" {
		t.Errorf("the example: %v, stdout %q, stderr %q; want 200 OK for workspace %s", err, stdout.String(), stderr.String(), workspace)
	}
}
