//go:build sdk

package proxy

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/blauth/blauth/internal/testkit/blaxeltest"
)

const (
	// healDuration is how long the processes of the heal tests call: the revocation comes once
	// they are calling, and they go on well past it.
	healDuration = 15 * time.Second
	healEvery    = 250 * time.Millisecond
)

// revokeUntilRefused waits until the API has served a call, then revokes the daemon's current
// token at the fake API, as Blaxel's does with a token revoked before its expiry, until a call
// was refused for it (the daemon may refresh between the revocation and the next call: then the
// new token is revoked too). It returns how many tokens it revoked.
func (f *fixture) revokeUntilRefused(t *testing.T) int {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); f.api.APICalls().OK == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no call reached the API within 60 s")
		}
	}
	for n := 1; n <= 5; n++ {
		f.api.Revoke(f.daemonToken(t))
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if f.api.APICalls().Reasons[blaxeltest.RejectRevoked] > 0 {
				return n
			}
		}
	}
	t.Fatal("five revoked tokens, and no call was refused for one")
	return 0
}

// A token revoked at the API before its expiry: the long-running @blaxel/core process under
// `exec --proxy` never sees the 401, because the proxy has blauthd drop the token and sends the
// call again with the next one. Every call succeeds, and the SDK makes no token request.
func TestSDKThroughProxyHealsARevokedToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	env := f.env(fmt.Sprintf("E2E_DURATION_MS=%d", healDuration.Milliseconds()), fmt.Sprintf("E2E_EVERY_MS=%d", healEvery.Milliseconds()))
	done := f.runAsync(healDuration+time.Minute, env, bins.Helper, "exec", "--proxy", "--", "node", f.script("sdk-loop.mjs"))
	revoked := f.revokeUntilRefused(t)
	o := <-done
	if o.err != nil {
		t.Fatalf("exec --proxy: %v\nstderr:\n%s", o.err, o.stderr)
	}
	var res sdkLoop
	if err := json.Unmarshal([]byte(o.last), &res); err != nil {
		t.Fatalf("no result line (%q, exit %d): %v\nstderr:\n%s", o.last, o.code, err, o.stderr)
	}
	api := f.api.APICalls()
	t.Logf("FIGURES heal under exec --proxy: %d calls, %d failed %q; %d token(s) revoked; API calls ok %d, rejected %d %v; SDK token requests %d",
		res.Calls, res.Failed, res.Errors, revoked, api.OK, api.Rejected, api.Reasons, f.api.TokenRequestsBy(blaxeltest.NotDaemon))
	if res.Failed != 0 || o.code != 0 {
		t.Errorf("%d of %d calls failed (exit %d): %q\nstderr:\n%s", res.Failed, res.Calls, o.code, res.Errors, o.stderr)
	}
	if api.Rejected != api.Reasons[blaxeltest.RejectRevoked] || api.Reasons[blaxeltest.RejectRevoked] == 0 {
		t.Errorf("the API rejected %v; want only calls with the revoked token, at least one", api.Reasons)
	}
	if api.OK != res.OK {
		t.Errorf("the API served %d calls, the SDK counted %d good ones: each refused call was sent again once", api.OK, res.OK)
	}
	if n := f.api.TokenRequestsBy(blaxeltest.NotDaemon); n != 0 {
		t.Errorf("the SDK made %d token requests", n)
	}
	if !strings.Contains(o.stderr, "(401); blauthd dropped it") {
		t.Errorf("the proxy did not tell of the heal on stderr:\n%s", o.stderr)
	}
}

// The same through the MCP bridge: a real MCP client calls a tool of a real MCP server, which
// asks the fake API about every request's token; the daemon's token is revoked in the middle of
// the session. The server advertises OAuth as Blaxel's hosted one does (its 401 points at its
// protected resource metadata). Every call succeeds, in the one session, the server refused the
// revoked token only, and nobody asked for its OAuth metadata: the client never left blauth.
func TestMCPBridgeHealsARevokedToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, mcpURL := f.mcpServer(t)
	done := f.runAsync(healDuration+time.Minute, f.env("E2E_HELPER="+bins.Helper, "E2E_MCP_URL="+mcpURL,
		fmt.Sprintf("E2E_DURATION_MS=%d", healDuration.Milliseconds()), fmt.Sprintf("E2E_EVERY_MS=%d", healEvery.Milliseconds())),
		"node", f.script("mcp-client.mjs"))
	revoked := f.revokeUntilRefused(t)
	o := <-done
	if o.err != nil {
		t.Fatalf("the MCP client did not run: %v\nstderr:\n%s", o.err, o.stderr)
	}
	var client mcpClient
	if err := json.Unmarshal([]byte(o.last), &client); err != nil {
		t.Fatalf("the MCP client printed no result (%q, exit %d): %v\nstderr:\n%s", o.last, o.code, err, o.stderr)
	}
	srv.close()
	var server mcpServer
	srv.next(&server, 30*time.Second)
	if err := srv.wait(30 * time.Second); err != nil {
		t.Errorf("the MCP server ended with %v", err)
	}
	t.Logf("FIGURES heal through blauth-helper mcp: %d calls, %d failed %q; %d token(s) revoked; server: %d requests, %d rejected %v, %d distinct tokens, %d session(s)",
		client.Calls, client.Failed, client.Errors, revoked, server.Requests, server.Rejected, server.Reasons, server.DistinctTokens, server.Sessions)
	if client.Failed != 0 || o.code != 0 || client.OK != client.Calls {
		t.Errorf("%d of %d tool calls failed (exit %d): %q\nstderr:\n%s", client.Failed, client.Calls, o.code, client.Errors, o.stderr)
	}
	if server.Rejected == 0 || server.Rejected != server.Reasons[blaxeltest.RejectRevoked] {
		t.Errorf("the server rejected %v; want only requests with the revoked token, at least one", server.Reasons)
	}
	if server.Sessions != 1 {
		t.Errorf("the server opened %d sessions; the heal must keep the one session", server.Sessions)
	}
	if server.MetadataFetches != 0 {
		t.Errorf("the OAuth metadata the server's 401 points at was fetched %d times: the bridge must keep its client out of OAuth", server.MetadataFetches)
	}
	if !strings.Contains(o.stderr, "(401); blauthd dropped it") {
		t.Errorf("the bridge did not tell of the heal on stderr:\n%s", o.stderr)
	}
}
