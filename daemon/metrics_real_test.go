//go:build real

package daemon_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/daemontest"
)

// The metrics are read by the Prometheus project's own text-format parser (its Python client,
// from Debian's python3-prometheus-client), as a scraper would read them.
func TestMetricsParseWithThePrometheusParser(t *testing.T) {
	const python = "/usr/bin/python3"
	check := exec.Command(python, "-c", "import prometheus_client.parser")
	if err := check.Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the Prometheus parser is missing (apt-get install python3-prometheus-client): %v", err)
		}
		t.Skipf("the Prometheus parser is missing: %v", err)
	}
	api := blaxeltest.New(0)
	defer api.Close()
	cc := api.AddClient("sa", "secret")
	td := daemontest.Start(t, daemontest.Options{API: api, Env: []string{"BL_WORKSPACE=acme", "BL_CLIENT_CREDENTIALS=" + cc},
		BLConfig: "context:\n  workspace: acme\nworkspaces: [\n", // a broken source, counted
		Mutate:   func(c *daemon.Config) { c.MetricsListen, c.MetricsWorkspaces = "127.0.0.1:0", true }})
	td.Token(t)
	ct, body := scrapeMetrics(t, td)
	if !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	parse := exec.CommandContext(ctx, python, "-c", `
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        print(f.type, s.name, ",".join("%s=%s" % kv for kv in sorted(s.labels.items())), s.value)
`)
	parse.Stdin = strings.NewReader(body)
	out, err := parse.CombinedOutput()
	if err != nil {
		t.Fatalf("the Prometheus parser refused the metrics: %v\n%s\n--- metrics:\n%s", err, out, body)
	}
	for _, want := range []string{
		"counter blauth_tokens_served_total kind=client_credentials 1.0",
		"counter blauth_exchanges_total kind=client_credentials,result=ok 1.0",
		"gauge blauth_token_expiry_seconds kind=client_credentials,source=daemon_env,workspace=acme",
		"gauge blauth_source_errors source=bl_config 1.0",
		"gauge blauth_watchers  0.0",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the parser did not read %q:\n%s", want, out)
		}
	}
}
