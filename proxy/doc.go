// Package proxy gives a fresh Blaxel token to tools that cannot ask blauthd for one: programs
// that read BL_API_KEY once and run for days, REST clients and HTTP stacks that take a URL and a
// static header, and MCP clients that can only launch a local command. It is the logic of the
// blauth-proxy binary, which blauth-helper execs for `exec --proxy` and `mcp`; keeping it out of
// the helper keeps net/http and TLS out of the helper.
//
// Three parts:
//
//   - Tokens follows one blauthd watch (ipc protocol version 2) for a selection (workspace, the
//     caller's directory and BL_* variables, min_ttl) with ipc.Follower, which never starts a
//     daemon and reconnects with backoff when the stream ends, and hands out the latest token
//     that still has enough life left.
//   - Server is an injecting reverse proxy on 127.0.0.1: /api/… goes to the workspace's Blaxel
//     API base (the daemon's api_url) and /run/… to its run base (RunBase). It admits a request
//     only when it carries the run's Secret as its bearer credential, and replaces that secret
//     with the current token, in the header form the client used, plus X-Blaxel-Workspace.
//     Request and response bodies stream through (SSE, chunked).
//   - Bridge connects newline-delimited JSON-RPC on stdin and stdout to an MCP server's
//     Streamable HTTP endpoint, with fresh auth headers on every request.
//
// Exec ties Tokens and Server to the life of one child process. Nothing here logs a token, the
// secret, or an Authorization header.
package proxy
