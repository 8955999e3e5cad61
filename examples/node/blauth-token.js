#!/usr/bin/env node
// Get a Blaxel token from blauthd, with Node's standard library only.
//
// As a module:
//
//   const { getToken, BlauthError } = require("./blauth-token.js");
//   const { token, workspace, expiry } = await getToken();   // or getToken({ workspace: "acme" })
//   fetch(url, { headers: { "X-Blaxel-Authorization": `Bearer ${token}`, "X-Blaxel-Workspace": workspace } });
//
// As a command, a drop-in for `bl token`:
//
//   node blauth-token.js [--json] [WORKSPACE]
//
// The protocol is described in docs/PROTOCOL.md.
"use strict";

const fs = require("node:fs");
const net = require("node:net");
const path = require("node:path");

const PROTOCOL_VERSION = "1";
const MAX_MESSAGE = 64 << 10; // the daemon's limit on a message, in bytes
const TIMEOUT_MS = 35000; // a get may wait up to 30 s for an exchange at the token endpoint

// Exit statuses, the same as blauth-helper's.
const EXIT_UNREACHABLE = 3;
const EXIT_BY_CODE = {
  no_workspace: 4,
  no_credentials: 4,
  auth_failed: 5,
  unavailable: 6,
  keyring_unavailable: 7,
};

// An error answer from blauthd. Branch on .code, never on the message. The code "unreachable"
// (no daemon listens) is this client's own: the daemon never sends it.
class BlauthError extends Error {
  constructor(code, message, hint = "") {
    super(message);
    this.name = "BlauthError";
    this.code = code;
    this.hint = hint;
  }
}

function privateDir(dir) {
  try {
    const st = fs.lstatSync(dir);
    return st.isDirectory() && st.uid === process.getuid() && (st.mode & 0o077) === 0;
  } catch {
    return false;
  }
}

// Where blauthd listens: the rule of ipc.SocketPath.
function socketPath(env = process.env) {
  if (env.BLAUTH_SOCKET) return env.BLAUTH_SOCKET;
  const uid = process.getuid();
  let xdg = env.XDG_RUNTIME_DIR || "";
  if ((xdg === "~" || xdg.startsWith("~/")) && env.HOME) xdg = env.HOME + xdg.slice(1);
  if (!path.isAbsolute(xdg)) xdg = ""; // a relative XDG_RUNTIME_DIR does not count
  let runtime;
  if (xdg) runtime = xdg;
  else if (process.platform === "darwin") runtime = "";
  else runtime = `/run/user/${uid}`;
  if (runtime && (xdg || privateDir(runtime))) return path.join(runtime, "blauth", "blauthd.sock");
  return path.join(env.TMPDIR || "/tmp", `blauth-${uid}`, "blauthd.sock");
}

const validValue = (v) => !/[\r\n\0]/.test(v);
const validKey = (k) => k.length > 0 && k.length <= 128 && /^[\x21-\x3c\x3e-\x7e]+$/.test(k);

function encode(fields) {
  let s = "";
  for (const [k, v] of fields) {
    // Never quote the value: it may be a secret.
    if (!validKey(k) || !validValue(v)) throw new Error(`the value of ${k} holds CR, LF or NUL`);
    s += `${k}=${v}\n`;
  }
  const data = Buffer.from(s + "\n", "utf8");
  if (data.length > MAX_MESSAGE) throw new Error(`request over ${MAX_MESSAGE} bytes`);
  return data;
}

function parse(buf) {
  const answer = {};
  for (const line of buf.toString("utf8").split("\n")) {
    if (line === "") break;
    const i = line.indexOf("=");
    if (i < 0 || /[\r\0]/.test(line)) throw new BlauthError("bad_answer", "malformed answer from blauthd");
    const k = line.slice(0, i);
    if (!(k in answer)) answer[k] = line.slice(i + 1); // the first value of a key counts
  }
  return answer;
}

// request sends one request (an array of [key, value]) and resolves to the answer as an object.
function request(fields, { socket = socketPath(), timeoutMs = TIMEOUT_MS } = {}) {
  const data = encode([["version", PROTOCOL_VERSION], ...fields]);
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err, answer) => {
      if (done) return;
      done = true;
      conn.destroy();
      if (err) reject(err);
      else if (answer.status !== "ok") reject(new BlauthError(answer.code || "internal", answer.message || "", answer.hint || ""));
      else resolve(answer);
    };
    const conn = net.createConnection({ path: socket }, () => conn.write(data));
    conn.setTimeout(timeoutMs, () => finish(new BlauthError("timeout", `blauthd did not answer within ${timeoutMs / 1000}s`)));
    conn.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length > MAX_MESSAGE) return finish(new BlauthError("bad_answer", `the answer is over ${MAX_MESSAGE} bytes`));
      const s = buf.toString("latin1");
      if (s === "\n" || s.endsWith("\n\n")) {
        try {
          finish(null, parse(buf));
        } catch (e) {
          finish(e);
        }
      }
    });
    conn.on("end", () => finish(new BlauthError("bad_answer", "blauthd closed the connection before answering")));
    conn.on("error", (e) => {
      if (["ENOENT", "ECONNREFUSED", "ENOTDIR", "ENOTSOCK"].includes(e.code)) {
        finish(new BlauthError("unreachable", `no blauthd answers on ${socket}: ${e.code}`, "start it with 'systemctl --user start blauthd.socket' or 'blauthd &'"));
      } else finish(e);
    });
  });
}

// getToken resolves to { token, workspace, expiry } (expiry in Unix seconds, 0 when the token
// does not expire), resolved for this process: its BL_* variables and its directory's .env.
async function getToken({ workspace, minTTL, socket } = {}) {
  const fields = [["action", "get"]];
  if (workspace) {
    if (!validValue(workspace)) throw new Error("the workspace name holds CR, LF or NUL");
    fields.push(["workspace", workspace]);
  }
  const cwd = process.cwd();
  if (validValue(cwd)) fields.push(["cwd", cwd]);
  for (const k of Object.keys(process.env).sort()) {
    const v = process.env[k];
    if (k.startsWith("BL_") && validKey("env." + k) && validValue(v)) fields.push(["env." + k, v]);
  }
  if (minTTL !== undefined) fields.push(["min_ttl", String(Math.trunc(minTTL))]);
  const answer = await request(fields, socket ? { socket } : {});
  if (!answer.token) throw new BlauthError("bad_answer", "the answer holds no token");
  return { token: answer.token, workspace: answer.workspace || "", expiry: Number(answer.expiry || 0) };
}

async function main(argv) {
  const asJSON = argv.includes("--json");
  const args = argv.filter((a) => a !== "--json");
  if (args.length > 1 || args.some((a) => a.startsWith("-"))) {
    process.stderr.write("usage: blauth-token.js [--json] [WORKSPACE]\n");
    return 2;
  }
  try {
    const tok = await getToken({ workspace: args[0] });
    process.stdout.write((asJSON ? JSON.stringify(tok) : tok.token) + "\n");
    return 0;
  } catch (e) {
    if (!(e instanceof BlauthError)) {
      process.stderr.write(`blauth: error: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`blauth: error: ${e.code}: ${e.message}\n`);
    if (e.hint) process.stderr.write(`blauth: hint: ${e.hint}\n`);
    if (e.code === "unreachable") return EXIT_UNREACHABLE;
    return EXIT_BY_CODE[e.code] || 1;
  }
}

module.exports = { getToken, request, socketPath, BlauthError };

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
