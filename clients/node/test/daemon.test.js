// Against the real blauthd the Go test started (BLAUTH_SOCKET): its bl config holds a bl login
// session for acme (the default workspace) and a service account for acme-sa; the fake Blaxel
// API behind it issues 60-second tokens.
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const fs = require("node:fs");
const path = require("node:path");
const { createRequire } = require("node:module");
const blauth = require("..");
const { need, tempDir, nextEvent, assertJWT, assertSameToken, assertOtherToken } = require("./helpers.js");

const socket = () => need("BLAUTH_SOCKET");

test("token(): the default workspace's login session, as a JWT with its expiry", async () => {
  socket();
  const tok = await blauth.token({ env: {} });
  assert.strictEqual(tok.workspace, "acme");
  assert.strictEqual(tok.kind, "login");
  assert.match(tok.source, /^bl_config:.*\/\.blaxel\/config\.yaml$/);
  assertJWT(tok.token, "acme's token");
  assert.ok(tok.expiry instanceof Date);
  const left = tok.expiry.getTime() - Date.now();
  assert.ok(left > 30000 && left <= 61000, `the token has ${left} ms left; the daemon serves 30 s or more of a 60 s token`);
});

test("token({workspace}): another workspace's service account", async () => {
  const tok = await blauth.token({ workspace: "acme-sa", env: {} });
  assert.strictEqual(tok.workspace, "acme-sa");
  assert.strictEqual(tok.kind, "client_credentials");
  assertJWT(tok.token, "acme-sa's token");
});

test("token(): the caller's BL_* variables and its directory's .env count, as for Blaxel's SDKs", async (t) => {
  const fromEnv = await blauth.token({ env: { BL_WORKSPACE: "mine", BL_API_KEY: "caller-key-1" } });
  assert.deepStrictEqual([fromEnv.workspace, fromEnv.token, fromEnv.kind, fromEnv.source, fromEnv.expiry], [
    "mine",
    "caller-key-1",
    "api_key",
    "caller_env:BL_API_KEY",
    null,
  ]);

  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, ".env"), "BL_WORKSPACE=proj\nBL_API_KEY=dotenv-key-1\n", { mode: 0o600 });
  const fromDotenv = await blauth.token({ cwd: dir, env: {} });
  assert.deepStrictEqual([fromDotenv.workspace, fromDotenv.token, fromDotenv.source], ["proj", "dotenv-key-1", `dotenv:${dir}/.env#BL_API_KEY`]);

  const noCwd = await blauth.token({ cwd: null, env: {} });
  assert.strictEqual(noCwd.workspace, "acme", "without cwd the .env must not count");
});

test("token(): a workspace with no credential is no_credentials, with the daemon's hint", async () => {
  await assert.rejects(blauth.token({ workspace: "nobody", env: {} }), (e) => {
    assert.ok(e instanceof blauth.BlauthError);
    assert.strictEqual(e.code, "no_credentials");
    assert.match(e.message, /nobody/);
    assert.match(e.hint, /bl login/);
    return true;
  });
});

test("watch(): the current token at once, then the daemon's refresh, to every watcher at the same moment", async (t) => {
  const before = await blauth.token({ env: {} });
  const a = blauth.watch({ env: {} });
  const b = blauth.watch({ env: {} });
  t.after(() => (a.close(), b.close()));
  const [ta, tb] = await Promise.all([a.ready(), b.ready()]);
  assertSameToken(ta.token, tb.token, "two watchers of one credential");
  assert.ok(ta.token === before.token || ta.expiry > before.expiry, "the watch began with an older token than get served");

  // 60 s tokens are refreshed 10.5 to 12 s into their life: wait for the next one.
  const [na, nb] = await Promise.all([nextEvent(a, "token", 20000), nextEvent(b, "token", 20000)]);
  assertOtherToken(na.token, ta.token, "the refresh");
  assertSameToken(na.token, nb.token, "the refresh each watcher got");
  assert.ok(na.expiry > ta.expiry);
  assertSameToken(a.current().token, na.token, "current() after the refresh");
  const now = await blauth.token({ env: {} });
  assertSameToken(now.token, na.token, "get after the refresh");
});

test("watch() as an async iterator: the current token, then the refresh", async () => {
  const w = blauth.watch({ env: {}, workspace: "acme-sa" });
  const seen = [];
  for await (const tok of w) {
    seen.push(tok);
    if (seen.length === 2) break;
  }
  assert.strictEqual(w.closed, true);
  assert.deepStrictEqual(seen.map((s) => s.workspace), ["acme-sa", "acme-sa"]);
  assert.ok(seen[1].expiry > seen[0].expiry, "the second token is not newer");
});

test("watch() of a workspace with no credential: an 'error' event, and ready() rejects at once", async (t) => {
  const w = blauth.watch({ workspace: "nobody", env: {} });
  t.after(() => w.close());
  const err = await nextEvent(w, "error", 10000);
  assert.strictEqual(err.code, "no_credentials");
  await assert.rejects(w.ready({ timeoutMs: 10000 }), { code: "no_credentials" });
  assert.strictEqual(w.current(), null);
});

test("useBlauth() with the real @blaxel/core (CommonJS): listModels succeeds with the daemon's token and workspace", async () => {
  need("BL_API_URL");
  const core = createRequire(path.join(need("BLAUTH_TEST_NODE_DIR"), "noop.js"))("@blaxel/core");
  const h = await blauth.useBlauth({ settings: core.settings, env: {} });
  try {
    assert.strictEqual(core.settings.credentials, h.credentials);
    assert.strictEqual(core.settings.workspace, "acme");
    const { data, error, response } = await core.listModels();
    assert.ok(!error, `listModels failed: ${JSON.stringify(error)}`);
    assert.strictEqual(response.status, 200);
    const list = Array.isArray(data) ? data : data.data;
    assert.strictEqual(list.length, 2);
    assert.strictEqual(core.settings.headers["x-blaxel-workspace"], "acme");
    assertSameToken(core.settings.token, h.current().token, "the SDK's token");
  } finally {
    h.close();
  }
});
