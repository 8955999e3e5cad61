// A real MCP client (the @modelcontextprotocol/sdk Client) that launches its server the way an IDE
// does, as a local command over stdio (StdioClientTransport): here `blauth-helper mcp URL`, the
// bridge to a Streamable HTTP server. It lists the tools, calls "count" every E2E_EVERY_MS for
// E2E_DURATION_MS (and "announce" once, after the third call), then closes, and prints one line:
//   {"calls","ok","failed","errors":[first five],"logs","listChanged","tools":[names],"answers":[first, last]}
// E2E_HELPER is the helper's path, E2E_MCP_URL the server's URL. The bridge gets PATH, HOME,
// BLAUTH_SOCKET and BLAUTH_NO_SPAWN, as an IDE's configuration would give it.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { LoggingMessageNotificationSchema, ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const every = Number(process.env.E2E_EVERY_MS || 1000);
const duration = Number(process.env.E2E_DURATION_MS || 10000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const env = {};
for (const k of ["PATH", "HOME", "BLAUTH_SOCKET", "BLAUTH_NO_SPAWN"]) if (process.env[k]) env[k] = process.env[k];

const result = { calls: 0, ok: 0, failed: 0, errors: [], logs: 0, listChanged: 0, tools: [], answers: [] };
const transport = new StdioClientTransport({ command: process.env.E2E_HELPER, args: ["mcp", process.env.E2E_MCP_URL], env, stderr: "inherit" });
const client = new Client({ name: "blauth-e2e-client", version: "1.0.0" });
client.setNotificationHandler(LoggingMessageNotificationSchema, () => void result.logs++);
client.setNotificationHandler(ToolListChangedNotificationSchema, () => void result.listChanged++);

const started = Date.now();
try {
  await client.connect(transport);
  result.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  while (Date.now() - started < duration) {
    const at = Date.now();
    result.calls++;
    try {
      const r = await client.callTool({ name: "count" });
      const text = r.content?.[0]?.text ?? "";
      if (r.isError) throw new Error(`tool error: ${text}`);
      result.ok++;
      if (result.answers.length < 1) result.answers.push(text);
      else result.answers[1] = text;
    } catch (err) {
      result.failed++;
      if (result.errors.length < 5) result.errors.push(String(err?.message ?? err));
    }
    if (result.calls === 3) {
      try {
        await client.callTool({ name: "announce" });
      } catch (err) {
        result.errors.push(`announce: ${err?.message ?? err}`);
      }
    }
    await sleep(Math.max(0, every - (Date.now() - at)));
  }
  // Notifications may still be on their way: give them a moment.
  for (let i = 0; i < 20 && result.listChanged === 0; i++) await sleep(100);
} catch (err) {
  result.failed++;
  result.errors.push(`session: ${err?.message ?? err}`);
} finally {
  await client.close().catch(() => {});
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exitCode = result.failed === 0 ? 0 : 1;
