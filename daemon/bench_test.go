package daemon_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blauth/blauth/daemon"
	"github.com/blauth/blauth/daemon/internal/broker"
	"github.com/blauth/blauth/daemon/internal/token"
	"github.com/blauth/blauth/internal/clock"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// startBenchDaemon runs a daemon in this process on a real socket in a short temporary
// directory, with env as its environment and clock as its wall clock (nil: the real one). It is
// stopped when the benchmark run ends. Unlike daemontest.Start, it logs nothing and reads no bl
// config, so that a benchmark measures the get alone.
func startBenchDaemon(tb testing.TB, env []string, clock clock.Clock) *daemon.Daemon {
	tb.Helper()
	dir := testkit.ShortTempDir(tb, "blb") // removed after the daemon's cleanup below
	cfg := daemon.Config{
		SocketPath: filepath.Join(dir, "run", "blauthd.sock"),
		Log:        zerolog.Nop(),
		Environ:    env,
		Clock:      clock,
		Version:    "bench",
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, cfg)
	if err != nil {
		cancel()
		tb.Fatalf("start daemon: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			tb.Error("daemon did not stop within 15s")
		}
	})
	return d
}

func benchGet(tb testing.TB, c *ipc.Client, req *ipc.Message) string {
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("get: %v", err)
	}
	t, err := ipc.ParseToken(resp)
	if err != nil {
		tb.Fatalf("get: %v", err)
	}
	return t.Token
}

func benchDial(tb testing.TB, d *daemon.Daemon) *ipc.Client {
	c, err := ipc.Dial(d.Socket(), 5*time.Second)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

var benchGetRequest = ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet)

// BenchmarkGetCached is a get of a cached service-account token through the daemon's socket,
// from several persistent connections at once (client and daemon in this process, so allocs/op
// counts both sides).
func BenchmarkGetCached(b *testing.B) { benchmarkGetCached(b, benchGetRequest) }

// BenchmarkGetCachedHelperShaped is the same get shaped as blauth-helper sends it: the caller's
// directory (which has no .env, looked up in the daemon's cache) and a BL_* variable.
func BenchmarkGetCachedHelperShaped(b *testing.B) {
	benchmarkGetCached(b, ipc.NewMessage(ipc.KeyVersion, ipc.Version, ipc.KeyAction, ipc.ActionGet,
		ipc.KeyDir, b.TempDir(), ipc.KeyEnvPrefix+"BL_ENV", "prod"))
}

func benchmarkGetCached(b *testing.B, req *ipc.Message) {
	api := blaxeltest.New(2 * time.Hour)
	b.Cleanup(api.Close)
	cc := api.AddClient("sa", "secret")
	d := startBenchDaemon(b, []string{"BL_API_URL=" + api.Base, "BL_WORKSPACE=bench", "BL_CLIENT_CREDENTIALS=" + cc}, nil)
	want := benchGet(b, benchDial(b, d), req)
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := ipc.Dial(d.Socket(), 5*time.Second)
		if err != nil {
			b.Errorf("dial: %v", err)
			return
		}
		defer c.Close()
		for pb.Next() {
			resp, err := c.Do(req)
			if err != nil || resp.Value(ipc.KeyToken) != want {
				b.Errorf("get: %v", err)
				return
			}
		}
	})
	b.StopTimer()
	if n := api.Count(""); n != 1 {
		b.Fatalf("%d token requests for a cached token, want 1", n)
	}
}

// BenchmarkGetDuringRefresh is a caller's latency while the background refresh of the token it
// gets is in flight: the token is past its refresh point (40% of its life left, on an injected
// clock) and the fake token endpoint holds the refresh for minutes. Compare with
// BenchmarkGetNoRefresh; the claim is that nobody waits on a refresh.
func BenchmarkGetDuringRefresh(b *testing.B) { benchmarkGetWhileRefreshing(b, true) }

// BenchmarkGetNoRefresh is the same get with no refresh in flight: the reference.
func BenchmarkGetNoRefresh(b *testing.B) { benchmarkGetWhileRefreshing(b, false) }

func benchmarkGetWhileRefreshing(b *testing.B, refreshing bool) {
	clock := clock.NewFake(time.Unix(1_900_000_000, 0))
	api := blaxeltest.New(2 * time.Hour)
	b.Cleanup(api.Close) // runs after the daemon's cleanup, which cancels the hung exchange
	api.SetNow(clock.Now)
	cc := api.AddClient("sa", "secret")
	d := startBenchDaemon(b, []string{"BL_API_URL=" + api.Base, "BL_WORKSPACE=bench", "BL_CLIENT_CREDENTIALS=" + cc}, clock)
	c := benchDial(b, d)
	first := benchGet(b, c, benchGetRequest)
	if refreshing {
		clock.Add(80 * time.Minute) // 40 of 120 minutes left: past the refresh point
		api.SetHang(10 * time.Minute)
		api.SetFault(blaxeltest.FaultHang, -1)
		if benchGet(b, c, benchGetRequest) != first { // starts the refresh
			b.Fatal("the get that started the refresh did not get the still-valid token")
		}
		for deadline := time.Now().Add(5 * time.Second); api.Count("client_credentials") < 2; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the background refresh never reached the token endpoint")
			}
		}
	}
	lat := make([]time.Duration, 0, min(b.N, 1<<20))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		tok := benchGet(b, c, benchGetRequest)
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
		if tok != first {
			b.Fatal("served a different token")
		}
	}
	b.StopTimer()
	if refreshing {
		// Still in flight: one exchange finished (the first), two reached the endpoint.
		for _, st := range d.Broker().Status() {
			if st.Workspace == "bench" && st.Exchanges != 1 {
				b.Fatalf("%d exchanges finished: the refresh was not in flight the whole time", st.Exchanges)
			}
		}
		if n := api.Count("client_credentials"); n != 2 {
			b.Fatalf("%d token requests, want 2 (the first and the hung refresh)", n)
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Microsecond) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// BenchmarkManyClientsOneDay simulates 24 hours (injected clock, one step a minute) of 200
// clients that each want a token every minute for one service account, and counts the requests
// that reach the token endpoint: through one broker (the daemon), versus each client refreshing
// on its own as the Go SDK and bl do (a new token when 20% or less of the lifetime is left).
// The token endpoint is the fake Blaxel API over real HTTP; ns/op is the time to simulate a day.
func BenchmarkManyClientsOneDay(b *testing.B) {
	const clients = 200
	var with, without int
	for i := 0; i < b.N; i++ {
		with = dayThroughBroker(b, clients)
		without = dayOnTheirOwn(b, clients)
	}
	b.ReportMetric(float64(with), "requests/day")
	b.ReportMetric(float64(without), "requests-without/day")
	b.ReportMetric(float64(without)/float64(with), "x-fewer")
	b.ReportMetric(clients, "clients")
}

const (
	benchDay  = 24 * time.Hour
	benchStep = time.Minute
)

func benchAPI(b *testing.B) (*blaxeltest.Server, *clock.Fake, string) {
	clock := clock.NewFake(time.Unix(1_900_000_000, 0))
	api := blaxeltest.New(2 * time.Hour)
	api.SetNow(clock.Now)
	return api, clock, api.AddClient("sa", "secret")
}

func dayThroughBroker(b *testing.B, clients int) int {
	api, clock, cc := benchAPI(b)
	defer api.Close()
	br := broker.New(context.Background(), broker.Config{Tokens: &token.Blaxel{Now: clock.Now}, Clock: clock, Log: zerolog.Nop()})
	defer br.Wait()
	cred := &sources.Credential{Workspace: "acme", Kind: ipc.KindClientCredentials, ClientCredentials: cc, BaseURL: api.Base,
		Source: sources.Provenance{Kind: sources.SourceCallerEnv, Where: "BL_CLIENT_CREDENTIALS"}}
	ctx := context.Background()
	for elapsed := time.Duration(0); elapsed < benchDay; elapsed += benchStep {
		for range clients {
			if _, err := br.Get(ctx, cred, 0, false); err != nil {
				b.Fatalf("at %v: %v", elapsed, err)
			}
		}
		br.Tick()
		br.Wait() // let a refresh started this minute land before the clock moves
		clock.Add(benchStep)
	}
	return api.Count("client_credentials")
}

func dayOnTheirOwn(b *testing.B, clients int) int {
	api, clock, cc := benchAPI(b)
	defer api.Close()
	x := &token.Blaxel{Now: clock.Now}
	ctx := context.Background()
	toks := make([]*token.Token, clients)
	for elapsed := time.Duration(0); elapsed < benchDay; elapsed += benchStep {
		now := clock.Now()
		for i, g := range toks {
			if g != nil && g.Expiry.Sub(now) > g.Lifetime()/5 {
				continue
			}
			g, err := x.ClientCredentials(ctx, api.Base, cc)
			if err != nil {
				b.Fatalf("client %d at %v: %v", i, elapsed, err)
			}
			toks[i] = g
		}
		clock.Add(benchStep)
	}
	return api.Count("client_credentials")
}
