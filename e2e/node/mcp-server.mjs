// A real MCP server (the @modelcontextprotocol/sdk McpServer, Streamable HTTP transport, stateful:
// one session per client, SSE answers) on 127.0.0.1 that, like a Blaxel-hosted one behind
// Blaxel's edge, serves only requests carrying a valid, unexpired bearer token: it checks each
// request's Authorization header by calling the fake Blaxel API (E2E_API_URL, …/v0) with it,
// which verifies the token's signature, its expiry and its workspace.
//
// Tools: "count" answers the number of calls so far, and sends a logging notification on the
// call's own stream first; "announce" makes the server send notifications/tools/list_changed,
// which travels on the session's GET stream.
//
// Output: first {"url": "http://127.0.0.1:PORT/mcp"}; at the end of stdin, one line
//   {"requests","rejected","reasons":{…},"distinctTokens","sessions","deletes","gets","posts","toolCalls"}
// then it exits. Tokens are kept in memory only, to count them; never printed.
import http from "node:http";
import { randomUUID } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";

const api = process.env.E2E_API_URL;
const stats = { requests: 0, rejected: 0, reasons: {}, distinctTokens: 0, sessions: 0, deletes: 0, gets: 0, posts: 0, toolCalls: 0 };
const tokens = new Set();
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
    stats.requests++;
    const problem = await validate(req);
    if (problem) {
      stats.rejected++;
      stats.reasons[problem] = (stats.reasons[problem] ?? 0) + 1;
      res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ error: problem }));
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
process.stdin.resume();
process.stdin.on("end", async () => {
  stats.distinctTokens = tokens.size;
  for (const t of transports.values()) await t.close().catch(() => {});
  server.closeAllConnections();
  server.close();
  process.stdout.write(JSON.stringify(stats) + "\n");
});
