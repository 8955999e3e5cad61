// Package proxy is blauth's end-to-end suite for the tools that cannot ask blauthd for a token:
// `blauth-helper exec --proxy` (blauth-proxy's injecting reverse proxy) and `blauth-helper mcp`
// (its MCP bridge). It runs the real blauthd, blauth-helper and blauth-proxy binaries against the
// fake Blaxel API of internal/testkit/blaxeltest (20-second tokens, e2etest.TokenTTL, beside a
// daemon with --min-ttl 10s; rotating refresh tokens, every API call's token checked, token
// requests counted by caller), with the real Blaxel TypeScript SDK, the real MCP SDK and the MCP
// Inspector's CLI, all pinned in e2e/node.
//
// Its tests carry the sdk build tag: run them with make test-sdk, after `npm ci` in e2e/node
// (.ci/install-deps.sh does it). Without node or the packages they are skipped, and in CI
// (CI=true) they fail.
//
//   - TestProxyRefusesRequestsWithoutItsRunsSecret: a request with no credential, a wrong one,
//     or the secret of another run (from the child of a second `exec --proxy`) is answered 401
//     and never reaches the API.
//   - TestProxyReplacesTheSecretAndStreams: the upstream sees the daemon's token in the header
//     form the client used, with X-Blaxel-Workspace, and never the secret; an SSE response
//     reaches the client event by event, before the upstream has finished.
//   - TestSDKThroughProxyOutlivesTokens: long-running @blaxel/core processes under `exec
//     --proxy` call listModels every second for three token lifetimes: every call
//     succeeds and the SDK makes no token request; the same process under plain `exec` fails
//     once its token expires (the reference).
//   - TestMCPClientThroughBridgeAcrossRefreshes: a real MCP client launches `blauth-helper mcp
//     URL` and calls a tool of a real MCP server, which accepts only valid, unexpired tokens,
//     every second across at least two token refreshes: every call succeeds; sessions,
//     notifications on the call's stream and on the GET stream all pass through.
//   - TestMCPInspectorCLIThroughBridge: the MCP Inspector's CLI (pinned in e2e/node), a client
//     nobody here wrote, runs `blauth-helper mcp URL` as its stdio server for tools/list and
//     tools/call (with an argument), one Inspector per call, across a refresh: every run exits 0
//     with the tools or the answer, every request upstream carried the daemon's token of the
//     moment, every session is deleted, and no bridge outlives its Inspector.
//   - TestSDKThroughProxyHealsARevokedToken, TestMCPBridgeHealsARevokedToken: the daemon's token
//     is revoked at the fake API in the middle of a run of @blaxel/core under `exec --proxy`, and
//     of an MCP session through `blauth-helper mcp`: every call succeeds (the proxy and the bridge
//     have blauthd drop the refused token and send the call again with the next one), in the one
//     MCP session, and the SDK makes no token request.
//   - TestSandboxThroughTheProxy: @blaxel/core's sandbox client (SandboxInstance.get, then
//     fs.write, fs.read, process.exec, and a fetch of a preview's spec.url) under `exec
//     --proxy`, for one and a half token lifetimes, against sandbox and preview hosts that are
//     second loopback servers checking every token: every call reaches them through the
//     proxy's /host route with the daemon's current token, and a sandbox whose host is outside
//     the run domains is refused without a request reaching it; the run domain named in
//     BLAUTH_RUN_DOMAINS, or (a shorter run) in run_domains: of blauth's config file.
//
// Each long test logs a line starting with FIGURES with its counts.
package proxy
