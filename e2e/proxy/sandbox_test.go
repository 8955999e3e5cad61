//go:build sdk

package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

// sandboxRound is a line of sandbox-probe.mjs.
type sandboxRound struct {
	Round         int     `json:"round"`
	URL           string  `json:"url"`
	H2Domain      *string `json:"h2Domain"`
	Read          string  `json:"read"`
	Stdout        string  `json:"stdout"`
	ExitCode      int     `json:"exitCode"`
	PreviewStatus int     `json:"previewStatus"`
	PreviewBody   string  `json:"previewBody"`
	Error         string  `json:"error"`
	Outside       string  `json:"outside"`
}

// The real @blaxel/core sandbox client, under exec --proxy, reaches a sandbox at the host its
// metadata.url names and a preview at its spec.url, both second loopback servers that check
// every token: through the proxy, with the daemon's current token across token lifetimes (the
// per-run secret would be refused), and a sandbox whose host is outside the run domains is
// refused by the proxy without a request reaching it. 127.0.0.1 is named a run domain in
// BLAUTH_RUN_DOMAINS, in the helper's environment (over one and a half token lifetimes), or in
// run_domains: of blauth's config file (two rounds); localhost is not one.
func TestSandboxThroughTheProxy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, config, env string
		rounds            int
		every             time.Duration
	}{
		{"BLAUTH_RUN_DOMAINS", "", "BLAUTH_RUN_DOMAINS=127.0.0.1", 12, 2500 * time.Millisecond},
		{"run_domains", "run_domains:\n  - 127.0.0.1\n", "", 2, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sandboxThroughTheProxy(t, newFixtureConfig(t, tc.config), tc.env, tc.rounds, tc.every)
		})
	}
}

func sandboxThroughTheProxy(t *testing.T, f *fixture, env string, rounds int, every time.Duration) {
	sbx, preview, outside := blaxeltest.NewSandboxHost(f.api), blaxeltest.NewSandboxHost(f.api), blaxeltest.NewSandboxHost(f.api)
	for _, h := range []*blaxeltest.SandboxHost{sbx, preview, outside} {
		t.Cleanup(h.Close)
	}
	f.api.AddSandbox("box", sbx.URL)
	f.api.AddPreview("box", "web", preview.URL+"/app")
	f.api.AddSandbox("elsewhere", strings.Replace(outside.URL, "127.0.0.1", "localhost", 1))

	vars := []string{"E2E_SANDBOX=box", "E2E_PREVIEW=web", "E2E_OUTSIDE=elsewhere",
		fmt.Sprintf("E2E_ROUNDS=%d", rounds), fmt.Sprintf("E2E_EVERY_MS=%d", every.Milliseconds())}
	if env != "" {
		vars = append(vars, env)
	}
	c := f.start(t, f.env(vars...), bins.Helper, "exec", "--proxy", "--", "node", f.script("sandbox-probe.mjs"))
	var proxyBase string
	for i := 0; i < rounds; i++ {
		var r sandboxRound
		c.next(&r, 60*time.Second)
		if r.Error != "" {
			t.Fatalf("round %d: %s", r.Round, r.Error)
		}
		want := fmt.Sprintf("round %d", i)
		if r.Read != want || r.Stdout != want+"\n" || r.ExitCode != 0 || r.PreviewStatus != 200 || r.PreviewBody != "preview ok: /app\n" {
			t.Errorf("round %d: read %q, ran %q (exit %d), preview %d %q; want %q each time and the preview's page",
				i, r.Read, r.Stdout, r.ExitCode, r.PreviewStatus, r.PreviewBody, want)
		}
		base, ok := strings.CutSuffix(r.URL, "/host/"+strings.TrimPrefix(sbx.URL, "http://"))
		if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") || (proxyBase != "" && base != proxyBase) {
			t.Errorf("round %d: the SDK was told the sandbox is at %s; want the proxy's /host route to %s", i, r.URL, sbx.URL)
		}
		proxyBase = base
		if r.H2Domain != nil {
			t.Errorf("round %d: the SDK uses HTTP/2 to %s, which would go around the proxy", i, *r.H2Domain)
		}
	}
	var o sandboxRound
	c.next(&o, 60*time.Second)
	if o.Outside != "refused" || !strings.Contains(o.Error, "403") {
		t.Errorf("the sandbox outside the run domains: %q (%s); want refused with 403", o.Outside, o.Error)
	}
	if err := c.wait(30 * time.Second); err != nil {
		t.Fatalf("the run ended with %v", err)
	}

	// Calls per round: the sandbox host gets a write, a read and a process; the preview one.
	got, gotPreview := sbx.Calls(), preview.Calls()
	if got.OK != 3*rounds || len(got.Refused) != 0 || gotPreview.OK != rounds || len(gotPreview.Refused) != 0 {
		t.Errorf("the sandbox host served %d and refused %v, the preview host served %d and refused %v; want %d and %d, none refused",
			got.OK, got.Refused, gotPreview.OK, gotPreview.Refused, 3*rounds, rounds)
	}
	if every*time.Duration(rounds) > tokenTTL && len(got.Tokens) < 2 {
		t.Errorf("the sandbox host saw %d distinct tokens over %s of %s tokens; want the daemon's refreshed ones (2 or more)", len(got.Tokens), every*time.Duration(rounds), tokenTTL)
	}
	t.Logf("FIGURES sandbox: %d rounds over %s: sandbox host %d served, %d refused, %d distinct tokens; preview host %d served, %d refused",
		rounds, every*time.Duration(rounds), got.OK, sum(got.Refused), len(got.Tokens), gotPreview.OK, sum(gotPreview.Refused))
	if n := outside.Calls(); n.OK+sum(n.Refused) != 0 {
		t.Errorf("the host outside the run domains got %d calls", n.OK+sum(n.Refused))
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
