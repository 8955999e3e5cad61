package daemon_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/internal/testkit/daemontest"
	"github.com/blauth/blauth/ipc"
)

// BenchmarkStatusOfTenThousandWorkspaces is one status request (version 2, its JSON split over
// many lines) to an in-process daemon whose bl config holds 10,000 workspaces, on a new
// connection each time, with the client's decoding of the JSON.
func BenchmarkStatusOfTenThousandWorkspaces(b *testing.B) {
	td := daemontest.Start(b, daemontest.Options{BLConfig: manyWorkspaces(10000), Mutate: func(c *daemon.Config) { c.Log = zerolog.Nop() }})
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
		if len(st.Workspaces) != 10000 {
			b.Fatalf("status lists %d workspaces, want 10000", len(st.Workspaces))
		}
	}
}
