// Helpers of blauth's tests (no tests here). The suite runs against a real blauthd started by
// the Go test e2e/sdk/node_client_test.go, which passes in the environment:
//
//   BLAUTH_SOCKET         the daemon's socket (a bl login session for acme, a service account
//                         for acme-sa, both in its bl config, against the fake Blaxel API)
//   BL_API_URL            the fake Blaxel API, for the Blaxel SDK
//   BLAUTH_TEST_BLAUTHD   the blauthd binary, for tests that start and restart their own daemons
//   BLAUTH_TEST_NODE_DIR  e2e/node, where the pinned @blaxel/core is installed
"use strict";

const assert = require("node:assert");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const blauth = require("..");

const { MessageReader } = blauth._internal;

// need returns the variable the Go test sets, and fails the test when it is missing: these tests
// are never skipped.
function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this suite with 'go test -tags sdk ./e2e/sdk/ -run TestNodeClient'`);
  return v;
}

// tempDir makes a short private directory (Unix socket paths are limited to about 104 bytes),
// removed when the test ends.
function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bln-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// fakeDaemon listens on a Unix socket in a temporary directory and calls onRequest(fields, conn,
// n) for every request (fields: [[key, value], …] in order; n counts requests from 1). It keeps
// every request in .requests and counts connections in .connections.
async function fakeDaemon(t, onRequest) {
  const socket = path.join(tempDir(t), "fake.sock");
  const fake = { socket, requests: [], connections: 0, conns: new Set() };
  const server = net.createServer((conn) => {
    fake.connections++;
    fake.conns.add(conn);
    conn.on("close", () => fake.conns.delete(conn));
    conn.on("error", () => {});
    let buf = "";
    conn.on("data", (chunk) => {
      buf += chunk.toString("utf8");
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0 || buf.startsWith("\n")) {
        const text = buf.startsWith("\n") ? "" : buf.slice(0, end);
        buf = buf.startsWith("\n") ? buf.slice(1) : buf.slice(end + 2);
        const fields = text === "" ? [] : text.split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]);
        fake.requests.push(fields);
        onRequest(fields, conn, fake.requests.length);
      }
    });
  });
  await new Promise((resolve) => server.listen(socket, resolve));
  t.after(() => {
    for (const c of fake.conns) c.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return fake;
}

// message renders an answer: an object's entries as key=value lines and the empty line.
function message(obj) {
  return Object.entries(obj).map(([k, v]) => `${k}=${v}\n`).join("") + "\n";
}

// eventually polls fn (which throws until it holds) every 50 ms for up to ms.
async function eventually(fn, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms: ${last && last.message}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// nextEvent resolves with the next emission of event on emitter, or rejects after ms.
function nextEvent(emitter, event, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no '${event}' within ${ms} ms`));
    }, ms);
    const on = (v) => {
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(v);
    };
    emitter.on(event, on);
  });
}

// startDaemon runs the real blauthd on socket with only the given BL_* variables (an API key
// needs no token endpoint) and resolves once it answers. It is stopped when the test ends.
// HOME is the test process's own, so that the Go test's check for processes left running sees it.
async function startDaemon(t, socket, vars) {
  const bin = need("BLAUTH_TEST_BLAUTHD");
  const child = spawn(bin, ["--no-keyring", "--log-format", "json"], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, BLAUTH_SOCKET: socket, ...vars },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr.on("data", (b) => (log += b));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const d = {
    child,
    exited,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
  t.after(() => d.stop());
  await eventually(() => blauth.token({ socket, env: {}, cwd: null, timeoutMs: 1000 }), 10000, "blauthd answering");
  return d;
}

// Assertions on tokens that never print one (assert.equal shows both values when it fails).
function assertJWT(tok, what) {
  assert.ok(typeof tok === "string" && /^[\w-]+\.[\w-]+\.[\w-]+$/.test(tok), `${what} is not a JWT`);
}
function assertSameToken(a, b, what) {
  assert.ok(a === b, `${what}: the tokens differ (${String(a).length} and ${String(b).length} chars)`);
}
function assertOtherToken(a, b, what) {
  assert.ok(a !== b, `${what}: the same token twice`);
}

module.exports = {
  need,
  tempDir,
  fakeDaemon,
  message,
  eventually,
  nextEvent,
  startDaemon,
  assertJWT,
  assertSameToken,
  assertOtherToken,
  MessageReader,
};
