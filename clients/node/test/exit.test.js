// Whole processes against the real daemon (BLAUTH_SOCKET): close() lets a process end on its
// own, and useBlauth() without settings finds the @blaxel/core build the caller itself loaded
// (the CommonJS one for require, the ESM one for import: Node keeps them as separate modules,
// each with its own settings object).
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const { spawn } = require("node:child_process");
const path = require("node:path");
const { pathToFileURL } = require("node:url");
const { need } = require("./helpers.js");

const lib = path.resolve(__dirname, "..");
const esm = pathToFileURL(path.join(lib, "index.mjs")).href;

// run runs node with args in dir and resolves to {code, signal, stdout, stderr}. A process that
// has not ended by itself within limitMs is killed: then signal is SIGKILL.
function run(args, dir, limitMs = 30000) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: dir, env: process.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b) => (stdout += b));
    child.stderr.on("data", (b) => (stderr += b));
    const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function assertExitedAlone(r, what) {
  assert.ok(r.signal !== "SIGKILL", `${what} did not end by itself: something kept it alive\nstderr: ${r.stderr}`);
  assert.strictEqual(r.code, 0, `${what} failed\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

test("a process whose watch is closed ends by itself", { timeout: 60000 }, async () => {
  need("BLAUTH_SOCKET");
  const script = `
    const blauth = require(${JSON.stringify(lib)});
    const w = blauth.watch();
    w.ready().then((t) => { console.log(t.workspace); w.close(); });`;
  const r = await run(["-e", script], lib);
  assertExitedAlone(r, "the watching process");
  assert.strictEqual(r.stdout.trim(), "acme");
});

test("useBlauth() from require: the CommonJS build's settings, and close() lets the process end", { timeout: 60000 }, async () => {
  const dir = need("BLAUTH_TEST_NODE_DIR"); // node -e resolves @blaxel/core from here
  const script = `
    const { settings, listModels } = require("@blaxel/core");
    const { useBlauth } = require(${JSON.stringify(lib)});
    (async () => {
      const h = await useBlauth();
      const { response } = await listModels();
      console.log(JSON.stringify({ ours: settings.credentials === h.credentials, workspace: settings.workspace, status: response.status }));
      h.close();
    })();`;
  const r = await run(["-e", script], dir);
  assertExitedAlone(r, "the CommonJS SDK process");
  assert.deepStrictEqual(JSON.parse(r.stdout), { ours: true, workspace: "acme", status: 200 });
});

test("useBlauth() from import: the ESM build's settings, and close() lets the process end", { timeout: 60000 }, async () => {
  const dir = need("BLAUTH_TEST_NODE_DIR");
  const script = `
    import { settings, listModels } from "@blaxel/core";
    import { useBlauth } from ${JSON.stringify(esm)};
    const h = await useBlauth();
    const { response } = await listModels();
    console.log(JSON.stringify({ ours: settings.credentials === h.credentials, workspace: settings.workspace, status: response.status }));
    h.close();`;
  const r = await run(["--input-type=module", "-e", script], dir);
  assertExitedAlone(r, "the ESM SDK process");
  assert.deepStrictEqual(JSON.parse(r.stdout), { ours: true, workspace: "acme", status: 200 });
});
