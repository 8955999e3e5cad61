// Package gosdk runs the real Blaxel Go SDK (github.com/blaxel-ai/sdk-go) with blauth's Go client
// (clients/go/blauth) against the fake Blaxel API and a real built blauthd, over several token
// lifetimes. It is a module of its own so that blauth's go.mod never requires the SDK; it uses
// the main module's test harness (internal/testkit/e2etest), which Go allows a module under
// github.com/blauth/blauth to import. Run it with make test-gosdk (not in CI: the module proxy
// there refuses the SDK).
package gosdk

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	blaxel "github.com/blaxel-ai/sdk-go"
	"github.com/blaxel-ai/sdk-go/option"

	"github.com/blauth/blauth/clients/go/blauth"
	"github.com/blauth/blauth/internal/testkit"
	"github.com/blauth/blauth/internal/testkit/blaxeltest"
	"github.com/blauth/blauth/internal/testkit/e2etest"
)

var bins e2etest.Binaries

// TestMain builds blauthd from the main module, two directories up.
func TestMain(m *testing.M) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		var mod []byte
		mod, err = os.ReadFile(filepath.Join(root, "go.mod"))
		if err == nil && !strings.HasPrefix(string(mod), "module github.com/blauth/blauth\n") {
			err = fmt.Errorf("%s is not blauth's main module", root)
		}
	}
	dir, derr := os.MkdirTemp("", "e2egosdk")
	if err == nil {
		err = derr
		defer os.RemoveAll(dir)
	}
	if err == nil {
		bins, err = e2etest.BuildBinaries(root, dir, "e2e")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/gosdk:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

const (
	workspace = "acme"
	// ttl is the fake API's token lifetime: short, so that three lifetimes pass in about 20 s.
	ttl = 6 * time.Second
	// lifetimes is how many token lifetimes the SDK's calls span.
	lifetimes = 3
)

// world is the fake API with a service account bound to workspace, a real blauthd holding it,
// and this process's environment as an SDK user's: BL_API_URL and BL_WORKSPACE, a HOME with no
// bl config, and no credential (the daemon has it).
type world struct {
	api    *blaxeltest.Server
	cc     string // the service account's BL_CLIENT_CREDENTIALS
	daemon *e2etest.Daemon
}

func newWorld(t *testing.T) *world {
	api := e2etest.StartAPI(t, ttl)
	cc := api.AddClient("sa-id", "sa-secret")
	api.BindClient("sa-id", workspace)
	home := e2etest.NewHome(t)
	// The daemon refreshes at half a lifetime and serves no token with under a second left.
	d := e2etest.StartDaemon(t, e2etest.DaemonOptions{Bin: bins.Blauthd, Home: home, APIURL: api.Base,
		Args: []string{"--refresh-left", "0.5", "--min-ttl", "1s"},
		Env:  []string{"BL_CLIENT_CREDENTIALS=" + cc, "BL_WORKSPACE=" + workspace}})
	t.Setenv("HOME", home.Dir)
	t.Setenv("BL_API_URL", api.Base)
	t.Setenv("BL_WORKSPACE", workspace)
	t.Setenv("BLAUTH_SOCKET", d.Socket)
	for _, k := range []string{"BL_API_KEY", "BL_CLIENT_CREDENTIALS", "BL_ENV", "BLAXEL_CUSTOM_HEADERS"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	return &world{api: api, cc: cc, daemon: d}
}

// source opens the client's token source on the daemon. env nil sends this process's BL_*.
func (w *world) source(t *testing.T, ctx context.Context, env []string) *blauth.TokenSource {
	t.Helper()
	ts, err := blauth.NewTokenSource(ctx, blauth.Options{MinTTL: time.Second, Dir: t.TempDir(), Env: env})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.Close() })
	return ts
}

// run lists models with each client, one call each in turn, until the fake API has issued the
// tokens of n lifetimes (n+1 token requests by the daemon), and returns the calls made and those
// that failed, each failure described.
func (w *world) run(t *testing.T, ctx context.Context, n int, clients map[string]blaxel.Client) (calls int, failed []string) {
	t.Helper()
	exchanges := func() int { return w.api.TokenRequestsBy(blaxeltest.IsDaemon) }
	start := exchanges()
	deadline := time.Now().Add(time.Duration(n+4) * ttl * 4) // a bound on a stuck run, not a speed limit
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for exchanges()-start < n+1 {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon made %d exchanges by the deadline, want %d", exchanges()-start, n+1)
		}
		for name, c := range clients {
			calls++
			if _, err := c.Models.List(ctx, blaxel.ModelListParams{}); err != nil {
				failed = append(failed, fmt.Sprintf("%s: call %d: %v", name, calls, err))
			}
		}
		<-tick.C
	}
	return calls, failed
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// The two-line set-up of docs/CLIENTS.md, with WithHTTPClient and with WithMiddleware: over three
// token lifetimes every call succeeds, and every token request at the API is the daemon's.
func TestSDKOverThreeLifetimes(t *testing.T) {
	w := newWorld(t)
	ctx := ctxFor(t)
	ts := w.source(t, ctx, nil)
	clients := map[string]blaxel.Client{
		"WithHTTPClient": blaxel.NewClient(option.WithHTTPClient(blauth.NewClient(ctx, ts))),
		"WithMiddleware": blaxel.NewClient(option.WithMiddleware(blauth.Middleware(ts))),
	}
	calls, failed := w.run(t, ctx, lifetimes, clients)
	daemon, other := w.api.TokenRequests()
	st := w.api.APICalls()
	fmt.Printf("e2e/gosdk: %d lifetimes of %s: %d of %d SDK calls ok; token requests: %d by blauthd, %d by the SDK\n",
		lifetimes, ttl, calls-len(failed), calls, daemon, other)
	for _, f := range failed {
		t.Error(f)
	}
	if other != 0 {
		t.Errorf("the SDK made %d token requests itself (callers %v), want none", other, w.api.TokenCallers())
	}
	if st.OK != calls || st.Rejected != 0 {
		t.Errorf("the API answered %d calls and refused %d (%v), want all %d answered", st.OK, st.Rejected, st.Reasons, calls)
	}
}

// With BL_CLIENT_CREDENTIALS also in the SDK process's environment, the SDK runs its own
// exchange before the client's headers replace its token; taking the variable out of the
// process after opening the token source (the daemon got it with the request) stops that.
func TestSDKWithCredentialsInTheEnvironment(t *testing.T) {
	w := newWorld(t)
	ctx := ctxFor(t)
	t.Setenv("BL_CLIENT_CREDENTIALS", w.cc)

	ts := w.source(t, ctx, nil)
	c := blaxel.NewClient(option.WithHTTPClient(blauth.NewClient(ctx, ts)))
	_, before := w.api.TokenRequests()
	calls, failed := w.run(t, ctx, 1, map[string]blaxel.Client{"BL_CLIENT_CREDENTIALS set": c})
	_, own := w.api.TokenRequests()
	fmt.Printf("e2e/gosdk: with BL_CLIENT_CREDENTIALS set: %d of %d SDK calls ok; token requests by the SDK: %d\n",
		calls-len(failed), calls, own-before)
	for _, f := range failed {
		t.Error(f)
	}
	if own-before == 0 {
		t.Errorf("the SDK made no token request of its own with BL_CLIENT_CREDENTIALS set; docs/CLIENTS.md says it does")
	}

	os.Unsetenv("BL_CLIENT_CREDENTIALS") // after NewTokenSource, before blaxel.NewClient
	c = blaxel.NewClient(option.WithHTTPClient(blauth.NewClient(ctx, ts)))
	_, before = w.api.TokenRequests()
	calls, failed = w.run(t, ctx, 1, map[string]blaxel.Client{"BL_CLIENT_CREDENTIALS unset": c})
	_, own = w.api.TokenRequests()
	fmt.Printf("e2e/gosdk: with BL_CLIENT_CREDENTIALS taken out: %d of %d SDK calls ok; token requests by the SDK: %d\n",
		calls-len(failed), calls, own-before)
	for _, f := range failed {
		t.Error(f)
	}
	if own != before {
		t.Errorf("the SDK made %d token requests with BL_CLIENT_CREDENTIALS taken out, want none", own-before)
	}
	testkit.WaitFor(t, 10*time.Second, "the token source to still serve", func() bool { _, err := ts.Token(); return err == nil })
}
