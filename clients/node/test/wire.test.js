// The client's side of the protocol, against a scripted daemon on a Unix socket: what it sends,
// how it reads answers however they are cut, what it refuses, and how it reports failures.
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const path = require("node:path");
const util = require("node:util");
const blauth = require("..");
const { fakeDaemon, message, tempDir, nextEvent, MessageReader } = require("./helpers.js");

const OK = { version: "2", status: "ok", workspace: "acme", token: "tok-1", expiry: "1767400000", kind: "login", source: "bl_config:/h/.blaxel/config.yaml" };

test("a get carries version 2, the action, the workspace, cwd, the caller's BL_* variables sorted, min_ttl", async (t) => {
  const fake = await fakeDaemon(t, (_, conn) => conn.end(message(OK)));
  const tok = await blauth.token({
    socket: fake.socket,
    workspace: "acme",
    cwd: "/home/me/project",
    env: { PATH: "/bin", BL_WORKSPACE: "w", HOME: "/h", BL_API_KEY: "k", BL_ENV: "dev", BLX: "no" },
    minTTL: 90.2,
  });
  assert.deepStrictEqual(fake.requests, [
    [
      ["version", "2"],
      ["action", "get"],
      ["workspace", "acme"],
      ["cwd", "/home/me/project"],
      ["env.BL_API_KEY", "k"],
      ["env.BL_ENV", "dev"],
      ["env.BL_WORKSPACE", "w"],
      ["min_ttl", "91"],
    ],
  ]);
  assert.strictEqual(tok.token, "tok-1");
  assert.strictEqual(tok.workspace, "acme");
  assert.deepStrictEqual(tok.expiry, new Date(1767400000 * 1000));
  assert.strictEqual(tok.kind, "login");
  assert.strictEqual(tok.source, "bl_config:/h/.blaxel/config.yaml");
  assert.strictEqual(tok.hint, "");
});

test("by default a get sends process.cwd() and the BL_* variables of process.env", async (t) => {
  const fake = await fakeDaemon(t, (_, conn) => conn.end(message(OK)));
  const saved = process.env.BL_TEST_MARKER;
  process.env.BL_TEST_MARKER = "m=1";
  t.after(() => (saved === undefined ? delete process.env.BL_TEST_MARKER : (process.env.BL_TEST_MARKER = saved)));
  await blauth.token({ socket: fake.socket });
  const req = new Map(fake.requests[0]);
  assert.strictEqual(req.get("cwd"), process.cwd());
  assert.strictEqual(req.get("env.BL_TEST_MARKER"), "m=1", "a value holding '=' goes as is");
  assert.ok(!req.has("env.PATH") && !req.has("env.HOME"), "only BL_* variables are sent");
});

test("an API key's answer has expiry 0: the token's expiry is null", async (t) => {
  const fake = await fakeDaemon(t, (_, conn) => conn.end(message({ ...OK, expiry: "0", kind: "api_key" })));
  const tok = await blauth.token({ socket: fake.socket, env: {} });
  assert.strictEqual(tok.expiry, null);
});

test("an answer cut into one-byte pieces is read whole, and a repeated key's first value counts", async (t) => {
  const fake = await fakeDaemon(t, (_, conn) => {
    const bytes = Buffer.from("version=2\nstatus=ok\nworkspace=acme\ntoken=first\ntoken=second\nexpiry=0\nkind=api_key\nsource=s\n\n");
    let i = 0;
    const drip = () => {
      if (i < bytes.length) {
        conn.write(bytes.subarray(i, ++i));
        setTimeout(drip, 1);
      }
    };
    drip();
  });
  const tok = await blauth.token({ socket: fake.socket, env: {} });
  assert.strictEqual(tok.token, "first");
});

test("a value holding CR, LF or NUL is refused, naming the variable and never showing the value; nothing is sent", async (t) => {
  const fake = await fakeDaemon(t, (_, conn) => conn.end(message(OK)));
  for (const bad of ["\r", "\n", "\0"]) {
    await assert.rejects(
      blauth.token({ socket: fake.socket, env: { BL_API_KEY: `sec${bad}ret` } }),
      (e) => {
        assert.ok(e instanceof blauth.BlauthError);
        assert.strictEqual(e.code, "bad_request");
        assert.match(e.message, /BL_API_KEY/);
        assert.ok(!e.message.includes("sec") && !e.message.includes("ret"), "the message shows the value");
        return true;
      },
    );
    assert.throws(() => blauth.watch({ socket: fake.socket, env: { BL_CLIENT_CREDENTIALS: `a${bad}b` } }), /BL_CLIENT_CREDENTIALS/);
    await assert.rejects(blauth.token({ socket: fake.socket, env: {}, workspace: `ac${bad}me` }), { code: "bad_request" });
    await assert.rejects(blauth.token({ socket: fake.socket, env: {}, cwd: `/tmp/a${bad}b` }), { code: "bad_request" });
  }
  assert.strictEqual(fake.connections, 0, "a refused request must not reach the daemon");
});

test("a relative cwd, a bad minTTL, an oversized request are refused before connecting", async (t) => {
  const fake = await fakeDaemon(t, (_, conn) => conn.end(message(OK)));
  await assert.rejects(blauth.token({ socket: fake.socket, env: {}, cwd: "project" }), { code: "bad_request", message: /absolute/ });
  for (const minTTL of [-1, NaN, Infinity, "30"]) {
    await assert.rejects(blauth.token({ socket: fake.socket, env: {}, minTTL }), { code: "bad_request", message: /minTTL/ });
  }
  const many = {};
  for (let i = 0; i < 300; i++) many[`BL_V${i}`] = "x";
  await assert.rejects(blauth.token({ socket: fake.socket, env: many }), { code: "bad_request", message: /256/ });
  await assert.rejects(blauth.token({ socket: fake.socket, env: { BL_BIG: "x".repeat(70000) } }), { code: "bad_request", message: /65536/ });
  assert.strictEqual(fake.connections, 0);
});

test("a daemon that speaks only version 1 is asked again in version 1", async (t) => {
  const fake = await fakeDaemon(t, (fields, conn) => {
    const version = new Map(fields).get("version");
    if (version !== "1") conn.end(message({ version: "1", status: "error", code: "unsupported_version", message: "protocol version 2 is not supported" }));
    else conn.end(message({ ...OK, version: "1" }));
  });
  const tok = await blauth.token({ socket: fake.socket, env: {} });
  assert.strictEqual(tok.token, "tok-1");
  assert.deepStrictEqual(fake.requests.map((r) => new Map(r).get("version")), ["2", "1"]);
});

test("an error answer is a BlauthError with the daemon's code, message and hint; no code means internal", async (t) => {
  const answers = [
    { version: "2", status: "error", code: "no_credentials", message: "no credentials for workspace x in any source", hint: "run `bl login x`" },
    { version: "2", status: "error", code: "a_code_from_the_future", message: "new" },
    { version: "2", status: "error" },
  ];
  const fake = await fakeDaemon(t, (_, conn, n) => conn.end(message(answers[n - 1])));
  await assert.rejects(blauth.token({ socket: fake.socket, env: {} }), (e) => {
    assert.ok(e instanceof blauth.BlauthError && e instanceof Error);
    assert.deepStrictEqual([e.code, e.message, e.hint], ["no_credentials", "no credentials for workspace x in any source", "run `bl login x`"]);
    return true;
  });
  await assert.rejects(blauth.token({ socket: fake.socket, env: {} }), { code: "a_code_from_the_future" });
  await assert.rejects(blauth.token({ socket: fake.socket, env: {} }), { code: "internal" });
});

test("no daemon: unreachable, with a hint", async (t) => {
  const socket = path.join(tempDir(t), "none.sock");
  await assert.rejects(blauth.token({ socket, env: {} }), (e) => {
    assert.strictEqual(e.code, "unreachable");
    assert.match(e.message, /none\.sock/);
    assert.ok(e.hint.length > 0);
    return true;
  });
});

test("a daemon that does not answer in time: timeout; one that hangs up: unreachable; a broken answer: bad_answer", async (t) => {
  const fake = await fakeDaemon(t, (_, conn, n) => {
    if (n === 2) conn.destroy();
    if (n === 3) conn.end("version=2\nthis line has no equals sign\n\n");
    if (n === 4) conn.end("version=2\nstatus=ok\nworkspace=acme\n\n"); // no token
  });
  await assert.rejects(blauth.token({ socket: fake.socket, env: {}, timeoutMs: 200 }), { code: "timeout" });
  await assert.rejects(blauth.token({ socket: fake.socket, env: {} }), { code: "unreachable" });
  await assert.rejects(blauth.token({ socket: fake.socket, env: {} }), { code: "bad_answer" });
  await assert.rejects(blauth.token({ socket: fake.socket, env: {} }), { code: "bad_answer" });
});

test("MessageReader splits a stream into messages and enforces the grammar", () => {
  const r = new MessageReader();
  assert.deepStrictEqual(r.push(Buffer.from("a=1\nb=x=y\n")), []);
  assert.deepStrictEqual(r.push(Buffer.from("a=2\n\nc=3\n\nd=")), [{ a: "1", b: "x=y" }, { c: "3" }]);
  assert.deepStrictEqual(r.push(Buffer.from("\u00e9\n\n")), [{ d: "\u00e9" }]);
  assert.throws(() => new MessageReader().push(Buffer.from("=v\n")), { code: "bad_answer" });
  assert.throws(() => new MessageReader().push(Buffer.from("k=a\rb\n")), { code: "bad_answer" });
  assert.throws(() => new MessageReader().push(Buffer.from("k=" + "x".repeat(17000))), { code: "bad_answer" });
});

test("a token, a watch and the SDK credentials never show the token when inspected", async (t) => {
  const expiry = String(Math.floor(Date.now() / 1000) + 3600);
  const fake = await fakeDaemon(t, (fields, conn) => conn.write(message({ ...OK, token: "s3cr3t-value", expiry, seq: "1" })));
  const tok = await blauth.token({ socket: fake.socket, env: {} });
  assert.ok(!util.inspect(tok).includes("s3cr3t"), "util.inspect shows the token");
  const settings = {};
  const h = await blauth.useBlauth({ socket: fake.socket, env: {}, settings });
  t.after(() => h.close());
  for (const shown of [util.inspect(h.watcher), util.inspect(h.credentials), util.inspect(h.current()), util.inspect(settings)]) {
    assert.ok(!shown.includes("s3cr3t"), "util.inspect shows the token");
  }
});

// A scripted watch: the test sends each message when it wants.
async function scriptedWatch(t) {
  let conn;
  const connected = [];
  const fake = await fakeDaemon(t, (fields, c) => {
    conn = c;
    for (const r of connected.splice(0)) r(c);
  });
  const send = (obj) => conn.write(message(obj));
  const nextConn = () => new Promise((r) => connected.push(r));
  return { fake, send, nextConn, conn: () => conn };
}

test("watch: each message replaces the state; an error drops the token; current() never returns an expired one", async (t) => {
  const s = await scriptedWatch(t);
  const first = s.nextConn();
  const w = blauth.watch({ socket: s.fake.socket, env: {}, workspace: "acme" });
  t.after(() => w.close());
  await first;
  assert.deepStrictEqual(new Map(s.fake.requests[0]).get("action"), "watch");
  const errors = [];
  w.on("error", (e) => errors.push(e.code));

  const later = Math.floor(Date.now() / 1000) + 3600;
  let got = nextEvent(w, "token", 5000);
  s.send({ ...OK, token: "t1", expiry: String(later), seq: "1" });
  assert.strictEqual((await got).token, "t1");
  assert.strictEqual(w.current().token, "t1");

  const failed = nextEvent(w, "error", 5000);
  s.send({ version: "2", status: "error", code: "no_credentials", message: "logged out", seq: "2" });
  assert.strictEqual((await failed).code, "no_credentials");
  assert.strictEqual(w.current(), null, "a token is held after the daemon said there is none");
  assert.strictEqual(w.workspace, "acme", "the workspace is still known");
  await assert.rejects(w.ready({ timeoutMs: 5000 }), { code: "no_credentials" });

  got = nextEvent(w, "token", 5000);
  s.send({ ...OK, token: "t2", expiry: String(Math.floor(Date.now() / 1000) + 1), seq: "3" });
  assert.strictEqual((await got).token, "t2");
  await new Promise((r) => setTimeout(r, 1100));
  assert.strictEqual(w.current(), null, "current() returned an expired token");
  assert.deepStrictEqual(errors, ["no_credentials"]);
});

test("watch: fresh() waits for a token with enough life, bounded; ready() takes any live one", async (t) => {
  const s = await scriptedWatch(t);
  const first = s.nextConn();
  const w = blauth.watch({ socket: s.fake.socket, env: {} });
  t.after(() => w.close());
  await first;
  const now = Math.floor(Date.now() / 1000);
  s.send({ ...OK, token: "short", expiry: String(now + 20), seq: "1" });
  assert.strictEqual((await w.ready()).token, "short");

  // 20 s left, 30 wanted: fresh waits for the next message.
  const wait = w.fresh({ minTTL: 30, timeoutMs: 5000 });
  let settled = false;
  wait.then(() => (settled = true), () => (settled = true));
  await new Promise((r) => setTimeout(r, 200));
  assert.strictEqual(settled, false, "fresh() resolved with a token under its minTTL");
  s.send({ ...OK, token: "long", expiry: String(now + 600), seq: "2" });
  assert.strictEqual((await wait).token, "long");

  // The daemon says unavailable, and sends nothing more: fresh gives up after its bound.
  const failed = nextEvent(w, "error", 5000);
  s.send({ version: "2", status: "error", code: "unavailable", message: "the token endpoint does not answer", hint: "next try in 5s", seq: "3" });
  await failed;
  await assert.rejects(w.fresh({ minTTL: 30, timeoutMs: 300 }), { code: "unavailable", hint: "next try in 5s" });
});

test("watch: the async iterator yields each new token, and leaving the loop closes the watch", async (t) => {
  const s = await scriptedWatch(t);
  const first = s.nextConn();
  const w = blauth.watch({ socket: s.fake.socket, env: {} });
  t.after(() => w.close());
  await first;
  const later = String(Math.floor(Date.now() / 1000) + 3600);
  s.send({ ...OK, token: "a", expiry: later, seq: "1" });
  const seen = [];
  for await (const tok of w) {
    seen.push(tok.token);
    if (tok.token === "a") s.send({ ...OK, token: "b", expiry: later, seq: "2" });
    if (tok.token === "b") break;
  }
  assert.deepStrictEqual(seen, ["a", "b"]);
  assert.strictEqual(w.closed, true);
  await assert.rejects(w.ready(), { code: "closed" });
});

test("watch: with no 'error' listener, a daemon's error or a lost connection does not crash the process", async (t) => {
  const s = await scriptedWatch(t);
  const first = s.nextConn();
  const w = blauth.watch({ socket: s.fake.socket, env: {} });
  t.after(() => w.close());
  await first;
  s.send({ version: "2", status: "error", code: "auth_failed", message: "refused", seq: "1" });
  const again = s.nextConn();
  s.conn().destroy();
  await again; // it reconnected, after an unreported 'unreachable'
  assert.strictEqual(w.lastError.code, "unreachable");
  assert.strictEqual(s.fake.requests.length, 2);
  assert.deepStrictEqual(s.fake.requests[1], s.fake.requests[0], "a reconnect must send the same request");
});

test("watch on a daemon older than watch: ready() says so at once, and the watch tries again later", async (t) => {
  const fake = await fakeDaemon(t, (_, conn) =>
    conn.write(message({ version: "1", status: "error", code: "unsupported_version", message: "protocol version 2 is not supported" })),
  );
  const w = blauth.watch({ socket: fake.socket, env: {} });
  t.after(() => w.close());
  await assert.rejects(w.ready({ timeoutMs: 5000 }), (e) => {
    assert.strictEqual(e.code, "unsupported_version");
    assert.match(e.hint, /restart/);
    return true;
  });
  const deadline = Date.now() + 5000;
  while (fake.requests.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(fake.requests.length >= 2, "the watch did not try again after an old daemon refused it");
  assert.strictEqual(w.lastError.code, "unsupported_version");
});

test("useBlauth: the credentials the SDK reads, from the watch; close() ends them", async (t) => {
  const s = await scriptedWatch(t);
  const first = s.nextConn();
  const settings = {};
  const pending = blauth.useBlauth({ socket: s.fake.socket, env: {}, settings });
  await first;
  const later = String(Math.floor(Date.now() / 1000) + 3600);
  s.send({ ...OK, workspace: "acme", token: "t1", expiry: later, seq: "1" });
  const h = await pending;
  t.after(() => h.close());
  const c = settings.credentials;
  assert.strictEqual(c, h.credentials);
  assert.strictEqual(c.workspace, "acme");
  assert.strictEqual(c.token, "t1");
  assert.strictEqual(c.authorization, "Bearer t1");
  await c.authenticate();

  const got = nextEvent(h.watcher, "token", 5000);
  s.send({ ...OK, workspace: "acme", token: "t2", expiry: later, seq: "2" });
  await got;
  assert.strictEqual(c.authorization, "Bearer t2", "the SDK would still send the replaced token");

  h.close();
  assert.strictEqual(c.token, "");
  assert.strictEqual(h.current(), null);
  await assert.rejects(c.authenticate(), { code: "closed" });
});

test("useBlauth fails, and leaves nothing open, when the daemon has no credential", async (t) => {
  const fake = await fakeDaemon(t, (_, conn) =>
    conn.write(message({ version: "2", status: "error", code: "no_workspace", message: "no workspace", seq: "1" })),
  );
  const settings = {};
  await assert.rejects(blauth.useBlauth({ socket: fake.socket, env: {}, settings }), { code: "no_workspace" });
  assert.strictEqual(settings.credentials, undefined, "credentials set although useBlauth failed");
  await new Promise((r) => setTimeout(r, 100));
  assert.strictEqual(fake.conns.size, 0, "the watch's connection is still open");
});

test("the ESM entry exports the same API", async () => {
  const esm = await import("../index.mjs");
  for (const name of ["token", "watch", "socketPath", "BlauthError", "Watch", "BlauthCredentials"]) {
    assert.strictEqual(esm[name], blauth[name], name);
  }
  assert.strictEqual(typeof esm.useBlauth, "function");
  assert.strictEqual(esm.default.token, blauth.token);
});
