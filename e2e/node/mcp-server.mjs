// A real MCP server (the @modelcontextprotocol/sdk McpServer, Streamable HTTP transport, stateful:
// one session per client, SSE answers) on 127.0.0.1 that, like a Blaxel-hosted one behind
// Blaxel's edge, serves only requests carrying a valid, unexpired bearer token: it checks each
// request's Authorization header by calling the fake Blaxel API (E2E_API_URL, …/v0) with it,
// which verifies the token's signature, its expiry and its workspace. Like Blaxel's hosted MCP
// server it advertises OAuth 2.1: a refused request is answered 401 with
// `WWW-Authenticate: Bearer resource_metadata="…"`, whose document it serves under
// /.well-known/oauth-protected-resource without a token.
//
// Tools: "count" answers the number of calls so far, and sends a logging notification on the
// call's own stream first; "announce" makes the server send notifications/tools/list_changed,
// which travels on the session's GET stream; "echo" answers "echo: " and its argument "text".
//
// Output: first {"url": "http://127.0.0.1:PORT/mcp"}; for each line on stdin, one line
//   {"tokens":[fingerprints]}
// of the tokens accepted since the last such line (a fingerprint is the first 16 hex digits of
// the SHA-256 of the token, never the token); at the end of stdin, one line
//   {"requests","rejected","reasons":{…},"distinctTokens","sessions","deletes","gets","posts","toolCalls","echoes","metadataFetches"}
// then it exits. Tokens are kept in memory only, to count them; never printed.
import http from "node:http";
import { createHash, randomUUID } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

const api = process.env.E2E_API_URL;
const stats = { requests: 0, rejected: 0, reasons: {}, distinctTokens: 0, sessions: 0, deletes: 0, gets: 0, posts: 0, toolCalls: 0, echoes: 0, metadataFetches: 0 };
const origin = () => `http://127.0.0.1:${server.address().port}`;
const tokens = new Set();
let recent = new Set(); // fingerprints of the tokens accepted since the last report
const fingerprint = (auth) => createHash("sha256").update(auth.replace(/^Bearer\s+/i, "")).digest("hex").slice(0, 16);
const transports = new Map();

// validate returns "" when the fake Blaxel API accepts the request's bearer token, else why not.
async function validate(req) {
  const auth = req.headers["authorization"];
  if (!auth) return "no_authorization_header";
  const r = await fetch(`${api}/models`, {
    headers: { authorization: auth, "x-blaxel-workspace": req.headers["x-blaxel-workspace"] ?? "" },
  });
  if (r.status !== 200) {
    const body = await r.json().catch(() => ({}));
    return body.error ?? `status_${r.status}`;
  }
  tokens.add(auth);
  recent.add(fingerprint(auth));
  return "";
}

function newServer() {
  const mcp = new McpServer({ name: "blauth-e2e-mcp", version: "1.0.0" }, { capabilities: { logging: {} } });
  mcp.registerTool("count", { description: "answers how many times it was called" }, async (extra) => {
    stats.toolCalls++;
    await extra.sendNotification({ method: "notifications/message", params: { level: "info", data: `call ${stats.toolCalls}` } });
    return { content: [{ type: "text", text: String(stats.toolCalls) }] };
  });
  mcp.registerTool("announce", { description: "sends notifications/tools/list_changed" }, async () => {
    mcp.sendToolListChanged();
    return { content: [{ type: "text", text: "announced" }] };
  });
  mcp.registerTool("echo", { description: "answers its argument", inputSchema: { text: z.string().max(1000) } }, async ({ text }) => {
    stats.echoes++;
    return { content: [{ type: "text", text: `echo: ${text}` }] };
  });
  return mcp;
}

function readJSON(req) {
  return new Promise((resolve, reject) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      try {
        resolve(JSON.parse(body));
      } catch (err) {
        reject(err);
      }
    });
    req.on("error", reject);
  });
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.url.startsWith("/.well-known/oauth-protected-resource")) {
      // Advertised as Blaxel's hosted MCP server does (OAuth 2.1 protected resource metadata);
      // counted, since a bridge that keeps its client out of OAuth never asks for it.
      stats.metadataFetches++;
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({
        resource: `${origin()}/mcp`, authorization_servers: [`${origin()}/oauth`], bearer_methods_supported: ["header"],
      }));
      return;
    }
    stats.requests++;
    const problem = await validate(req);
    if (problem) {
      stats.rejected++;
      stats.reasons[problem] = (stats.reasons[problem] ?? 0) + 1;
      res.writeHead(401, {
        "content-type": "application/json",
        "www-authenticate": `Bearer error="invalid_token", resource_metadata="${origin()}/.well-known/oauth-protected-resource/mcp"`,
      }).end(JSON.stringify({ error: problem }));
      return;
    }
    if (req.method === "GET") stats.gets++;
    if (req.method === "POST") stats.posts++;
    if (req.method === "DELETE") stats.deletes++;
    const sid = req.headers["mcp-session-id"];
    const known = sid ? transports.get(sid) : undefined;
    if (known) {
      await known.handleRequest(req, res);
      return;
    }
    if (sid || req.method !== "POST") {
      res.writeHead(sid ? 404 : 400, { "content-type": "application/json" }).end(JSON.stringify({ error: "no such session" }));
      return;
    }
    const body = await readJSON(req);
    if (!isInitializeRequest(body)) {
      res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error: "initialize first" }));
      return;
    }
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        transports.set(id, transport);
        stats.sessions++;
      },
    });
    transport.onclose = () => transport.sessionId && transports.delete(transport.sessionId);
    await newServer().connect(transport);
    await transport.handleRequest(req, res, body);
  } catch (err) {
    process.stderr.write(`mcp-server.mjs: ${err?.stack ?? err}\n`);
    if (!res.headersSent) res.writeHead(500).end();
  }
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ url: `http://127.0.0.1:${server.address().port}/mcp` }) + "\n");
});
let pending = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  pending = (pending + chunk).slice(-1000); // only the test writes here: short lines
  for (let i = pending.indexOf("\n"); i >= 0; i = pending.indexOf("\n")) {
    pending = pending.slice(i + 1);
    process.stdout.write(JSON.stringify({ tokens: [...recent] }) + "\n");
    recent = new Set();
  }
});
process.stdin.on("end", async () => {
  stats.distinctTokens = tokens.size;
  for (const t of transports.values()) await t.close().catch(() => {});
  server.closeAllConnections();
  server.close();
  process.stdout.write(JSON.stringify(stats) + "\n");
});
