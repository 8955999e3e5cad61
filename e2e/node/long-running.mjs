// A long-running Blaxel SDK process (an agent, an MCP server, a worker): it imports the real
// @blaxel/core, calls listModels() (GET {BL_API_URL}/models) every 1 to 2 s for
// E2E_DURATION_MS, prints one JSON line with what happened and ends.
//
// E2E_AUTH selects where its token comes from:
//   blauth  `await useBlauth()` first (the blauth package of clients/node, by relative path:
//           it is not in package.json, so the lock file holds registry packages only), then
//           `handle.close()` at the end, after which the process must end by itself;
//   env     nothing: the SDK reads BL_WORKSPACE and BL_API_KEY from its environment, which
//           is how `blauth-helper exec -- node …` hands a process its token today.
// E2E_MIN_TTL (seconds, optional) is useBlauth's minTTL: the least life a token it lets a request
// go with has left (the library's default, 30 s, when unset).
//
// Output, one line: {"mode","workspace","calls","ok","failed","reasons":{reason: n},
//   "expiries":[Unix seconds of each token sent, ascending],"minLeftMs":<least life left on a
//   token when a call began>,"beforeExpiry":{"ok","failed"},"afterExpiry":{"ok","failed"},
//   "loadMs":<ms from the process's start until @blaxel/core and blauth were loaded>,
//   "readyMs":<ms from then until the first call could be made>,"endMs":<ms from the
//   process's start until it printed this line>,"fatal":"<why it could not run>"}
// beforeExpiry counts the calls that ended before the token they sent expired; afterExpiry the
// ones that began at or after it (a call across the instant is in neither).
// Exit status: 0 when the loop ran to its end (the calls' outcomes are for the test to judge),
// 1 when it could not run. The token itself is never printed.
import { listModels } from "@blaxel/core";
import { useBlauth } from "../../clients/node/index.mjs";

const mode = process.env.E2E_AUTH;
const durationMs = Number(process.env.E2E_DURATION_MS || 0);
const t0 = Date.now();
const loadMs = Math.round(process.uptime() * 1000);

const out = {
  mode,
  workspace: "",
  calls: 0,
  ok: 0,
  failed: 0,
  reasons: {},
  expiries: [],
  minLeftMs: null,
  beforeExpiry: { ok: 0, failed: 0 },
  afterExpiry: { ok: 0, failed: 0 },
  loadMs,
  readyMs: 0,
  endMs: 0,
  fatal: "",
};

// jwtExpiry reads a JWT's exp claim (Unix seconds), 0 when it has none.
function jwtExpiry(token) {
  try {
    const payload = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString("utf8"));
    return Number(payload.exp) || 0;
  } catch {
    return 0;
  }
}

let handle = null;
// current returns the token the SDK sends next: its workspace and expiry (Unix seconds).
let current;
if (mode === "blauth") {
  try {
    const minTTL = process.env.E2E_MIN_TTL ? Number(process.env.E2E_MIN_TTL) : undefined;
    handle = await useBlauth({ minTTL });
  } catch (e) {
    out.fatal = `useBlauth: ${e.code}: ${e.message}`;
  }
  current = () => {
    const t = handle.current();
    return t ? { workspace: t.workspace, exp: t.expiry ? Math.floor(t.expiry.getTime() / 1000) : 0 } : { workspace: "", exp: 0 };
  };
} else if (mode === "env") {
  const exp = jwtExpiry(process.env.BL_API_KEY || "");
  current = () => ({ workspace: process.env.BL_WORKSPACE || "", exp });
} else {
  out.fatal = `E2E_AUTH must be blauth or env, not ${JSON.stringify(mode)}`;
}
if (!durationMs) out.fatal ||= "E2E_DURATION_MS is not set";
if (out.fatal) {
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(1);
}

out.readyMs = Date.now() - t0;
const seen = new Set();
const end = Date.now() + durationMs;
while (Date.now() < end) {
  const { workspace, exp } = current();
  out.workspace ||= workspace;
  if (exp) seen.add(exp);
  const began = Date.now();
  if (exp) out.minLeftMs = Math.min(out.minLeftMs ?? Infinity, exp * 1000 - began);
  let reason = "";
  try {
    const { error, response } = await listModels();
    if (error || !response || !response.ok) {
      const code = error && typeof error === "object" && error.error ? error.error : JSON.stringify(error ?? null);
      reason = `${response ? response.status : 0} ${code}`;
    }
  } catch (e) {
    // The SDK throws before sending when it has no credentials, and so does useBlauth's
    // authenticate() when no usable token came in time.
    reason = `thrown ${e.code || ""} ${e.message}`.trim();
  }
  const ended = Date.now();
  out.calls++;
  if (reason) {
    out.failed++;
    out.reasons[reason] = (out.reasons[reason] || 0) + 1;
  } else {
    out.ok++;
  }
  if (exp) {
    const side = ended < exp * 1000 ? out.beforeExpiry : began >= exp * 1000 ? out.afterExpiry : null;
    if (side) side[reason ? "failed" : "ok"]++;
  }
  await new Promise((r) => setTimeout(r, 1000 + Math.random() * 1000));
}
out.expiries = [...seen].sort((a, b) => a - b);
if (handle) handle.close();
out.endMs = Math.round(process.uptime() * 1000);
process.stdout.write(JSON.stringify(out) + "\n");
// No process.exit: the process must end by itself once the watch is closed.
