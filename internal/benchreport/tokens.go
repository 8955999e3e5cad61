package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

// tokenRequests counts the requests N concurrent processes that hold the same service account
// make to the token endpoint: through blauthd (blauth-helper token), and each on its own
// (directclient).
func (b *bench) tokenRequests() error {
	s := b.section("Token-endpoint requests for N concurrent processes")
	s.printf("N real processes are started together and waited for, all with the same service account in `BL_CLIENT_CREDENTIALS` ")
	s.printf("(a new one for each N, so nothing is cached) and `BL_WORKSPACE` in their environment; the fake API counts the ")
	s.printf("client-credentials requests it receives.\n\n")
	s.printf("- **With the daemon**: N × `bin/blauth-helper token` (it sends its `BL_*` variables with the request). So that the N ")
	s.printf("requests really overlap the exchange, the fake holds that first exchange for 500 ms (`FaultHang`, once): every helper that ")
	s.printf("asks meanwhile waits on the same single flight. All N must print the same JWT.\n")
	s.printf("- **Without**: N × `directclient`, each doing the client-credentials POST itself, as every SDK process and `bl` does.\n\n")
	s.printf("| N | requests with blauthd | wall time | requests without | wall time |\n|---|---|---|---|---|\n")
	for _, n := range []int{1, 10, 100} {
		id := fmt.Sprintf("tok-n%d", n)
		cc := b.api.AddClient(id, "secret")
		env := append(slices.Clone(b.clientEnv), "BL_WORKSPACE="+id, "BL_CLIENT_CREDENTIALS="+cc)
		before := b.api.Count("client_credentials")
		b.api.SetHang(500 * time.Millisecond)
		b.api.SetFault(blaxeltest.FaultHang, 1)
		outs, wallWith, err := b.concurrent(n, env, b.helper, "token")
		b.api.SetFault(blaxeltest.FaultNone, 0)
		if err != nil {
			return fmt.Errorf("%d processes with blauthd: %w", n, err)
		}
		with := b.api.Count("client_credentials") - before
		for _, o := range outs {
			if o != outs[0] || strings.Count(o, ".") != 2 {
				return fmt.Errorf("%d processes: the helpers did not all print the same JWT", n)
			}
		}

		denv := append(slices.Clone(b.clientEnv), "BL_API_URL="+b.api.Base, "BL_CLIENT_CREDENTIALS="+cc)
		before = b.api.Count("client_credentials")
		_, wallWithout, err := b.concurrent(n, denv, b.direct)
		if err != nil {
			return fmt.Errorf("%d processes without blauthd: %w", n, err)
		}
		without := b.api.Count("client_credentials") - before
		progress("   N=%d: %d request(s) with blauthd, %d without", n, with, without)
		s.printf("| %d | %d | %s | %d | %s |\n", n, with, wallWith.Round(time.Millisecond), without, wallWithout.Round(time.Millisecond))
		b.add(row{What: fmt.Sprintf("Token-endpoint requests, %d concurrent process(es)", n), Figure: fmt.Sprintf("%d", with),
			Ref: fmt.Sprintf("without daemon %d", without), Ratio: ratio(float64(with), float64(without)), Target: "1 per credential", Verdict: verdict(with == 1)})
	}
	s.printf("\nWall time is from the first start to the last exit; with blauthd it includes the fake's 500 ms hold of the one exchange.\n")
	return nil
}

// concurrent starts n copies of bin args together, waits for them all, and returns their
// standard outputs and the wall time from the first start to the last exit.
func (b *bench) concurrent(n int, env []string, bin string, args ...string) ([]string, time.Duration, error) {
	cmds := make([]*exec.Cmd, n)
	outs := make([]bytes.Buffer, n)
	errs := make([]bytes.Buffer, n)
	t0 := time.Now()
	for i := range cmds {
		c := exec.CommandContext(b.ctx, bin, args...)
		c.Env, c.Dir, c.Stdout, c.Stderr = env, b.work, &outs[i], &errs[i]
		if err := c.Start(); err != nil {
			for _, started := range cmds[:i] {
				_ = started.Process.Kill()
				_ = started.Wait()
			}
			return nil, 0, err
		}
		cmds[i] = c
	}
	var wg sync.WaitGroup
	werrs := make([]error, n)
	for i, c := range cmds {
		wg.Add(1)
		go func() { defer wg.Done(); werrs[i] = c.Wait() }()
	}
	wg.Wait()
	wall := time.Since(t0)
	res := make([]string, n)
	for i, err := range werrs {
		if err != nil {
			return nil, wall, fmt.Errorf("process %d of %d: %v: %s", i+1, n, err, strings.TrimSpace(errs[i].String()))
		}
		res[i] = strings.TrimSpace(outs[i].String())
	}
	return res, wall, nil
}
