//go:build sdk

package sdk

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
)

// tapSummary is the count lines that end the TAP output of `node --test`.
type tapSummary map[string]int

func parseTAPSummary(out string) tapSummary {
	sum := tapSummary{}
	re := regexp.MustCompile(`^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$`)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.Atoi(m[2])
			sum[m[1]] = n
		}
	}
	return sum
}

// minNodeClientTests is how many tests clients/node/test/*.test.js hold at least: fewer means
// a file was not picked up.
const minNodeClientTests = 36

// TestNodeClient runs the Node client library's own suite (clients/node/test, Node's built-in
// runner) against the real blauthd binary and the fake Blaxel API: a bl login session for acme
// and a service account for acme-sa in the daemon's bl config, 60-second tokens (nodeClientTTL:
// the suite runs on the library's defaults). The client processes get an empty HOME of their
// own; some tests start and restart their own daemons (with that HOME, so that the check for
// processes left running sees them too).
func TestNodeClient(t *testing.T) {
	t.Parallel()
	nodeDir := e2etest.NodeDir(t, moduleRoot)
	f := newFixtureTTL(t, nodeClientTTL, nodeClientTTL/2, nil)
	d := f.startDaemon(t)
	client := e2etest.NewHome(t)
	e2etest.CheckNothingLeft(t, client)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	files, err := filepath.Glob(filepath.Join(moduleRoot, "clients", "node", "test", "*.test.js"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no clients/node/test/*.test.js (%v)", err)
	}
	cmd := exec.CommandContext(ctx, "node", append([]string{"--test", "--test-reporter=tap"}, files...)...)
	cmd.Dir = moduleRoot
	cmd.Env = append(client.HomeEnv(),
		"BLAUTH_SOCKET="+d.Socket,
		"BL_API_URL="+f.api.Base,
		"BLAUTH_TEST_BLAUTHD="+bins.Blauthd,
		"BLAUTH_TEST_NODE_DIR="+nodeDir,
		"DO_NOT_TRACK=1",
	)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	t.Logf("node --test clients/node/test/*.test.js (%s):\n%s", elapsed.Round(time.Millisecond), out)

	sum := parseTAPSummary(string(out))
	if err != nil {
		t.Errorf("node --test failed: %v", err)
	}
	if sum["fail"] != 0 || sum["cancelled"] != 0 {
		t.Errorf("%d tests failed and %d were cancelled (see the output above)", sum["fail"], sum["cancelled"])
	}
	if sum["skipped"] != 0 || sum["todo"] != 0 {
		t.Errorf("%d tests skipped and %d todo: every test must run", sum["skipped"], sum["todo"])
	}
	if sum["tests"] < minNodeClientTests || sum["pass"] != sum["tests"] {
		t.Errorf("%d of %d tests passed, want all of at least %d", sum["pass"], sum["tests"], minNodeClientTests)
	}
	if strings.Contains(string(out), "eyJ") {
		t.Errorf("the suite's output holds a JWT: a token was printed")
	}
	if n := f.api.TokenRequestsBy(blaxeltest.NotDaemon); n != 0 {
		t.Errorf("%d token requests came from the client processes; every token must come from blauthd", n)
	}
	api := f.api.APICalls()
	t.Logf("FIGURES node client suite: %d tests passed in %s; API calls ok %d rejected %d; token requests blauthd %d, others %d",
		sum["pass"], elapsed.Round(100*time.Millisecond), api.OK, api.Rejected, f.api.TokenRequestsBy(blaxeltest.IsDaemon), f.api.TokenRequestsBy(blaxeltest.NotDaemon))
	if api.Rejected != 0 {
		t.Errorf("the API rejected %d calls: %v", api.Rejected, api.Reasons)
	}
}
