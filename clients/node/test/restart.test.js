// A watch outlives its daemon: these tests start their own real blauthd (BLAUTH_TEST_BLAUTHD) on
// a socket of their own, holding an API key (no token endpoint needed), stop it and start another.
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const path = require("node:path");
const blauth = require("..");
const { tempDir, nextEvent, startDaemon } = require("./helpers.js");

const key = (k) => ({ BL_WORKSPACE: "restart-ws", BL_API_KEY: k });

test("a watch reconnects after the daemon restarts and gets the new daemon's token", { timeout: 60000 }, async (t) => {
  const socket = path.join(tempDir(t), "d.sock");
  const first = await startDaemon(t, socket, key("key-before"));

  const w = blauth.watch({ socket, env: {}, cwd: null });
  const quiet = blauth.watch({ socket, env: {}, cwd: null }); // no 'error' listener at all
  t.after(() => (w.close(), quiet.close()));
  const problems = [];
  w.on("error", (e) => problems.push(e.code));
  assert.strictEqual((await w.ready()).token, "key-before");
  assert.strictEqual((await quiet.ready()).token, "key-before");

  const stopped = await first.stop();
  assert.deepStrictEqual(stopped, { code: 0, signal: null }, `blauthd did not stop cleanly:\n${first.log()}`);
  assert.strictEqual(w.current().token, "key-before", "a daemon stopping does not end the token it served");

  const next = nextEvent(w, "token", 30000);
  const nextQuiet = nextEvent(quiet, "token", 30000);
  await startDaemon(t, socket, key("key-after"));
  assert.strictEqual((await next).token, "key-after");
  assert.strictEqual((await nextQuiet).token, "key-after");
  assert.strictEqual(problems[0], "shutting_down", `problems reported: ${problems}`);
});

test("a watch started before any daemon gets a token once one listens", { timeout: 60000 }, async (t) => {
  const socket = path.join(tempDir(t), "late.sock");
  const w = blauth.watch({ socket, env: {}, cwd: null });
  t.after(() => w.close());
  const problem = await nextEvent(w, "error", 5000);
  assert.strictEqual(problem.code, "unreachable");
  assert.strictEqual(w.current(), null);
  await startDaemon(t, socket, key("key-late"));
  assert.strictEqual((await w.ready({ timeoutMs: 20000 })).token, "key-late");
});
