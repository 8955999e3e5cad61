// Package sdk is blauth's end-to-end suite with the real Blaxel TypeScript SDK (@blaxel/core
// 0.3.21, pinned in e2e/node): real SDK processes and the real blauthd binary share a bl CLI
// config (~/.blaxel/config.yaml in a temporary HOME) against the fake Blaxel API of
// internal/testkit/blaxeltest, which rotates refresh tokens, checks every API call's token and
// workspace, and counts token requests by caller (blauthd names itself in its User-Agent).
//
// Its tests carry the sdk build tag: run them with make test-sdk, after `npm ci` in e2e/node
// (.ci/install-deps.sh does it). Without node or the packages they are skipped, and in CI
// (CI=true) they fail.
//
//   - TestSDKBesideDaemonNeverRefreshes: 30 one-call SDK processes over two token lifetimes
//     (20 s each, e2etest.TokenTTL, the daemon at --min-ttl 10s) beside blauthd make no token
//     request of their own, and every call succeeds.
//   - TestSDKWithoutDaemon: the same processes without blauthd, for reference; it logs how many
//     token requests they made and how many calls failed.
//   - TestSDKNeighbourWorkspaceSurvivesWriteBack: blauthd's write-back of a refreshed login
//     session leaves a neighbouring workspace's clientCredentials line as written, and the SDK
//     still authenticates that workspace.
//   - TestLongRunningSDK: ten long-running SDK processes on useBlauth() for three token lifetimes
//     all succeed on one daemon refreshing about once per refresh period; the same ten under
//     blauth-helper exec fail once their token expires.
//   - TestNodeClient: the Node client library's own suite against the real daemon (60 s tokens).
//
// Each test logs a line starting with FIGURES with its counts. BLAUTH_E2E_DAEMON_ARGS adds flags
// to every daemon the suite starts, e.g. BLAUTH_E2E_DAEMON_ARGS='--refresh-left 0.6'.
package sdk
