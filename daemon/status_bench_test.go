package daemon_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// BenchmarkStatus is one status request (version 2, its JSON split over many lines) to an
// in-process daemon whose bl config holds 1,000 or 20,000 workspaces, on a new connection each
// time, with the client's decoding of the JSON. ns/workspace is the time per workspace listed:
// a status linear in workspaces gives both sizes the same (benchreport compares them). The
// entries are as small as bl's format allows (a name and an API key), so that 20,000 fit the
// 1 MiB the daemon reads of a bl config (sources.MaxBLConfigBytes).
func BenchmarkStatus(b *testing.B) {
	for _, n := range []int{1000, 20000} {
		b.Run(fmt.Sprintf("workspaces=%d", n), func(b *testing.B) { benchmarkStatus(b, n) })
	}
}

func benchmarkStatus(b *testing.B, n int) {
	td := daemontest.Start(b, daemontest.Options{BLConfig: smallWorkspaces(n), Mutate: func(c *daemon.Config) { c.Log = zerolog.Nop() }})
	req := ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionStatus)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := ipc.Dial(td.Socket, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := c.Do(req)
		c.Close()
		if err != nil {
			b.Fatalf("status: %v", err)
		}
		var st ipc.Status
		if err := json.Unmarshal([]byte(resp.Long(ipc.KeyJSON)), &st); err != nil {
			b.Fatalf("status JSON: %v", err)
		}
		if len(st.Workspaces) != n {
			b.Fatalf("status lists %d workspaces, want %d", len(st.Workspaces), n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/workspace")
}

// smallWorkspaces is a bl config of n workspaces, each a name and an API key, the first the
// context's.
func smallWorkspaces(n int) string {
	var b strings.Builder
	b.WriteString("context:\n  workspace: w0\nworkspaces:\n")
	for i := range n {
		fmt.Fprintf(&b, "- name: w%d\n  credentials:\n    apiKey: k%d\n", i, i)
	}
	b.WriteString("tracking: false\n")
	return b.String()
}
