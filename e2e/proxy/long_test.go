//go:build sdk

package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

// sdkLoop is the line sdk-loop.mjs prints at its end.
type sdkLoop struct {
	Calls          int      `json:"calls"`
	OK             int      `json:"ok"`
	Failed         int      `json:"failed"`
	Errors         []string `json:"errors"`
	FirstFailureAt *int64   `json:"firstFailureAt"`
	StartedAt      int64    `json:"startedAt"`
	EndedAt        int64    `json:"endedAt"`
}

const (
	// sdkProcs long-running SDK processes run under exec --proxy at once, each its own proxy.
	sdkProcs = 3
	// sdkDuration is each one's life: three token lifetimes.
	sdkDuration = 3 * tokenTTL
	sdkEvery    = time.Second
)

// Long-running @blaxel/core processes read BL_API_KEY once, as any long-running program does.
// Under `exec --proxy` that key is the proxy's secret and every call leaves with a fresh token:
// about three token lifetimes of calls every second all succeed, and the SDK never asks the
// token endpoint for anything. The reference, the same process under plain `exec` (BL_API_KEY
// is a JWT living tokenTTL), fails once that token expires.
func TestSDKThroughProxyOutlivesTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	env := f.env(fmt.Sprintf("E2E_DURATION_MS=%d", sdkDuration.Milliseconds()), fmt.Sprintf("E2E_EVERY_MS=%d", sdkEvery.Milliseconds()))
	daemonBefore := f.api.TokenRequestsBy(blaxeltest.IsDaemon)

	type run struct {
		label  string
		args   []string
		env    []string // env when nil
		result sdkLoop
		code   int
		stderr string
		err    error
	}
	var runs []*run
	for i := range sdkProcs {
		runs = append(runs, &run{label: fmt.Sprintf("exec --proxy #%d", i+1), args: []string{"exec", "--proxy", "--", "node", f.script("sdk-loop.mjs")}})
	}
	// The reference gets BL_API_URL as a user would set it: the SDK must reach the fake API.
	reference := &run{label: "plain exec (reference)", args: []string{"exec", "--", "node", f.script("sdk-loop.mjs")},
		env: append(env[:len(env):len(env)], "BL_API_URL="+f.api.Base)}
	runs = append(runs, reference)
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), sdkDuration+time.Minute)
			defer cancel()
			var last string
			runEnv := r.env
			if runEnv == nil {
				runEnv = env
			}
			last, r.stderr, r.code, r.err = f.runToEnd(ctx, runEnv, bins.Helper, r.args...)
			if r.err == nil {
				if err := json.Unmarshal([]byte(last), &r.result); err != nil {
					r.err = fmt.Errorf("no result line (%q): %w", last, err)
				}
			}
		}()
	}
	wg.Wait()
	okTotal := 0
	for _, r := range runs {
		if r.err != nil {
			t.Fatalf("%s: %v (exit %d)\nstderr:\n%s", r.label, r.err, r.code, r.stderr)
		}
		res := r.result
		first := "none"
		if res.FirstFailureAt != nil {
			first = fmt.Sprintf("%.0f s after its start", float64(*res.FirstFailureAt-res.StartedAt)/1000)
		}
		t.Logf("%s: %d calls over %.0f s, %d ok, %d failed (first failure: %s)", r.label, res.Calls,
			float64(res.EndedAt-res.StartedAt)/1000, res.OK, res.Failed, first)
		okTotal += res.OK
	}
	api := f.api.APICalls()
	sdkTokens, daemonTokens := f.api.TokenRequestsBy(blaxeltest.NotDaemon), f.api.TokenRequestsBy(blaxeltest.IsDaemon)-daemonBefore
	proxied := runs[:sdkProcs]
	calls, failed := 0, 0
	for _, r := range proxied {
		calls += r.result.Calls
		failed += r.result.Failed
	}
	refFirst := ""
	if len(reference.result.Errors) > 0 {
		refFirst = reference.result.Errors[0]
		if len(refFirst) > 100 {
			refFirst = refFirst[:100] + "…"
		}
	}
	t.Logf("FIGURES exec --proxy with @blaxel/core: %d processes × %s, %d calls, %d failed; SDK token requests %d; blauthd token requests during the run %d; API calls ok %d rejected %d %v; reference (plain exec) %d/%d failed, the first: %s",
		sdkProcs, sdkDuration, calls, failed, sdkTokens, daemonTokens, api.OK, api.Rejected, api.Reasons,
		reference.result.Failed, reference.result.Calls, refFirst)

	for _, r := range proxied {
		if r.result.Failed != 0 || r.code != 0 {
			t.Errorf("%s: %d of %d calls failed (exit %d): %q; stderr:\n%s", r.label, r.result.Failed, r.result.Calls, r.code, r.result.Errors, r.stderr)
		}
		if min := int(sdkDuration/sdkEvery) * 8 / 10; r.result.Calls < min {
			t.Errorf("%s made %d calls, fewer than %d: the run did not cover the token lifetimes it should", r.label, r.result.Calls, min)
		}
	}
	if sdkTokens != 0 {
		t.Errorf("the SDK made %d token requests (callers %q); under exec --proxy it must make none", sdkTokens, f.api.TokenCallers())
	}
	if daemonTokens < 2 {
		t.Errorf("blauthd made %d token requests during %s of %s tokens; the run did not span the refreshes it should", daemonTokens, sdkDuration, tokenTTL)
	}
	if api.OK != okTotal {
		t.Errorf("the API counted %d good calls, the processes %d", api.OK, okTotal)
	}
	if got, want := api.Rejected, reference.result.Failed; got != want {
		t.Errorf("the API rejected %d calls, want %d (the reference's failures only: the proxy never sends an expired or wrong token)", got, want)
	}
	// The reference shows what the proxy prevents: a test that cannot fail would pass here too.
	if reference.result.Failed == 0 || reference.result.Errors == nil || !strings.Contains(reference.result.Errors[0], "401") {
		t.Errorf("the reference (BL_API_KEY = a JWT living %s, read once) did not fail with 401 over %s: %+v", tokenTTL, sdkDuration, reference.result)
	}
}

// mcpClient is the line mcp-client.mjs prints at its end; mcpServer the one mcp-server.mjs
// prints at the end of its stdin.
type mcpClient struct {
	Calls       int      `json:"calls"`
	OK          int      `json:"ok"`
	Failed      int      `json:"failed"`
	Errors      []string `json:"errors"`
	Logs        int      `json:"logs"`
	ListChanged int      `json:"listChanged"`
	Tools       []string `json:"tools"`
	Answers     []string `json:"answers"`
}

type mcpServer struct {
	Requests       int            `json:"requests"`
	Rejected       int            `json:"rejected"`
	Reasons        map[string]int `json:"reasons"`
	DistinctTokens int            `json:"distinctTokens"`
	Sessions       int            `json:"sessions"`
	Deletes        int            `json:"deletes"`
	Gets           int            `json:"gets"`
	Posts          int            `json:"posts"`
	ToolCalls      int            `json:"toolCalls"`
	Echoes         int            `json:"echoes"`
	// MetadataFetches counts requests for the OAuth protected resource metadata: a client kept
	// out of OAuth by the bridge never makes one.
	MetadataFetches int `json:"metadataFetches"`
}

const (
	// mcpDuration is a token lifetime and a quarter: past the expiry of the first token, and
	// across several of the daemon's refreshes (one every RefreshPeriod).
	mcpDuration = tokenTTL + tokenTTL/4
	mcpEvery    = time.Second
)

// A real MCP client launches `blauth-helper mcp URL` as IDEs launch local servers, and calls a
// tool of a real MCP server that accepts only valid, unexpired tokens (it asks the fake API)
// every second across at least two token refreshes: every call succeeds. The session id, the
// logging notification each call sends on its own SSE stream, and a tools/list_changed
// notification on the session's GET stream all pass through; the session is deleted at the end.
func TestMCPClientThroughBridgeAcrossRefreshes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, mcpURL := f.mcpServer(t)
	t.Logf("MCP server at %s", mcpURL)

	daemonBefore := f.api.TokenRequestsBy(blaxeltest.IsDaemon)
	ctx, cancel := context.WithTimeout(context.Background(), mcpDuration+time.Minute)
	defer cancel()
	last, stderr, code, err := f.runToEnd(ctx, f.env("E2E_HELPER="+bins.Helper, "E2E_MCP_URL="+mcpURL,
		fmt.Sprintf("E2E_DURATION_MS=%d", mcpDuration.Milliseconds()), fmt.Sprintf("E2E_EVERY_MS=%d", mcpEvery.Milliseconds())),
		"node", f.script("mcp-client.mjs"))
	if err != nil {
		t.Fatalf("the MCP client did not run: %v\nstderr:\n%s", err, stderr)
	}
	var client mcpClient
	if err := json.Unmarshal([]byte(last), &client); err != nil {
		t.Fatalf("the MCP client printed no result (%q, exit %d): %v\nstderr:\n%s", last, code, err, stderr)
	}
	refreshes := f.api.TokenRequestsBy(blaxeltest.IsDaemon) - daemonBefore
	srv.close()
	var server mcpServer
	srv.next(&server, 30*time.Second)
	if err := srv.wait(30 * time.Second); err != nil {
		t.Errorf("the MCP server ended with %v", err)
	}
	t.Logf("FIGURES MCP through blauth-helper mcp: %d calls over %s, %d ok, %d failed %q; blauthd refreshes during the run %d; server: %d requests (%d POST, %d GET, %d DELETE), %d rejected %v, %d distinct tokens, %d session(s), %d tool calls; client got %d logging and %d list_changed notifications",
		client.Calls, mcpDuration, client.OK, client.Failed, client.Errors, refreshes, server.Requests, server.Posts, server.Gets,
		server.Deletes, server.Rejected, server.Reasons, server.DistinctTokens, server.Sessions, server.ToolCalls, client.Logs, client.ListChanged)
	if stderr != "" {
		t.Logf("the MCP client's stderr (the bridge's included):\n%s", stderr)
	}

	if client.Failed != 0 || code != 0 || client.OK != client.Calls {
		t.Errorf("%d of %d tool calls failed (exit %d): %q", client.Failed, client.Calls, code, client.Errors)
	}
	if min := int(mcpDuration/mcpEvery) * 8 / 10; client.Calls < min {
		t.Errorf("%d calls, fewer than %d: the run did not last as it should", client.Calls, min)
	}
	if refreshes < 2 {
		t.Errorf("blauthd refreshed %d times during the run, want at least 2", refreshes)
	}
	if server.DistinctTokens < 3 {
		t.Errorf("the server saw %d distinct tokens, want at least 3 (the first and two refreshed ones)", server.DistinctTokens)
	}
	if server.Rejected != 0 {
		t.Errorf("the server rejected %d requests %v: the bridge sent an invalid or expired token", server.Rejected, server.Reasons)
	}
	if server.Sessions != 1 || server.Deletes != 1 {
		t.Errorf("the server opened %d session(s) and saw %d DELETE, want one session, deleted at the end", server.Sessions, server.Deletes)
	}
	if server.Gets < 1 || client.ListChanged < 1 {
		t.Errorf("the notification stream: %d GET requests, %d tools/list_changed delivered; want at least one of each", server.Gets, client.ListChanged)
	}
	if client.Logs != server.ToolCalls || server.ToolCalls != client.Calls {
		// Every "count" call sends one logging notification on its own stream; "announce" sends none.
		t.Errorf("the client got %d logging notifications for %d count calls (%d served)", client.Logs, client.Calls, server.ToolCalls)
	}
	if !slices.Equal(client.Tools, []string{"announce", "count", "echo"}) {
		t.Errorf("tools listed: %q", client.Tools)
	}
	if len(client.Answers) != 2 || client.Answers[0] != "1" {
		t.Errorf("answers (first, last): %q, want the first to be 1", client.Answers)
	}
}
