// Package clients is the end-to-end suite of blauth's client libraries, clients/go/blauth and
// clients/python/blauth.py, with the real blauthd binary behind socket activation (the harness
// holds the socket and starts a daemon at the first connection and after each exit, as systemd's
// socket unit does) and the fake Blaxel API of internal/testkit/blaxeltest, which checks every API
// call's token signature, expiry and workspace and counts token requests by caller.
//
// Its tests carry the sdk build tag: run them with make test-sdk.
//
//   - TestGoFleet, TestPythonFleet: 10 long-running client processes per language, holding no
//     secret, follow the daemon's watch and call the API every 1–2 s for three token lifetimes
//     (20 s tokens, e2etest.TokenTTL, the daemon at --min-ttl 10s), across one daemon restart:
//     every call succeeds, the processes make no token request, and the daemon about one per
//     refresh period. Each logs a FIGURES line.
//   - TestPythonClient: the unit tests of blauth.py (clients/python/tests) against the real
//     daemon, and its adapter inside the real httpx.
//   - TestPythonSocketPath: blauth.py finds the socket where ipc.SocketPath says.
package clients
