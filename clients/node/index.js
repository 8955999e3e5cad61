// blauth: Blaxel tokens from blauthd, the per-user credential daemon, for Node.js processes.
//
//   token(opts)      one token, now
//   watch(opts)      the token now and every new one, for processes that run for hours
//   useBlauth(opts)  the Blaxel TypeScript SDK (@blaxel/core) authenticated by the daemon
//
// Standard library only. The socket protocol is docs/PROTOCOL.md of the blauth repository;
// this file never writes a token to a log, an error message or the console.
"use strict";

const { EventEmitter } = require("node:events");
const fs = require("node:fs");
const net = require("node:net");
const path = require("node:path");
const { createRequire } = require("node:module");

const PROTOCOL_VERSION = 2;
const MAX_REQUEST = 64 << 10; // bytes, the empty line included
const MAX_REQUEST_FIELDS = 256;
const MAX_ANSWER = 16 << 20;
const MAX_LINE = 16 << 10;
const MAX_CWD = 4096;
// A get may wait up to 25 s for the token endpoint; the daemon answers within 35 s in all.
const ANSWER_TIMEOUT_MS = 35000;
// How long ready() and an SDK request wait for a usable token before failing.
const WAIT_TIMEOUT_MS = 30000;
// The daemon's default --min-ttl: it never serves a token with less life left.
const DEFAULT_MIN_TTL = 30;
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 4000;

// Codes after which waiting for a token is pointless until something changes (the user logs in,
// fixes a secret, upgrades): ready() and an SDK request fail at once on them.
const PERMANENT = new Set([
  "bad_request",
  "unsupported_version",
  "unknown_action",
  "no_workspace",
  "no_credentials",
  "auth_failed",
  "forbidden",
]);

const inspectCustom = Symbol.for("nodejs.util.inspect.custom");

// BlauthError is every error this library reports. Branch on .code, never on the message:
// a code of the protocol (no_credentials, auth_failed, unavailable, …) or one of this client's
// own: unreachable (no daemon answers), timeout, bad_answer (the daemon's answer broke the
// protocol), closed (the watch was closed), sdk_not_found (useBlauth found no @blaxel/core).
class BlauthError extends Error {
  constructor(code, message, hint = "", options = undefined) {
    super(message, options);
    this.name = "BlauthError";
    this.code = code;
    this.hint = hint || "";
  }
}

// ---------------------------------------------------------------------------------------------
// Where the daemon listens: the rule of the daemon's ipc.SocketPath.

function isPrivateDir(dir, uid) {
  try {
    const st = fs.lstatSync(dir);
    return st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0;
  } catch {
    return false;
  }
}

// socketPathFor is socketPath with the system's facts passed in, for tests.
function socketPathFor(env, sys) {
  if (env.BLAUTH_SOCKET) return env.BLAUTH_SOCKET;
  let xdg = env.XDG_RUNTIME_DIR || "";
  if ((xdg === "~" || xdg.startsWith("~/")) && env.HOME) xdg = env.HOME + xdg.slice(1);
  if (!path.isAbsolute(xdg)) xdg = ""; // a relative XDG_RUNTIME_DIR counts as unset
  if (xdg) return path.join(xdg, "blauth", "blauthd.sock");
  if (sys.platform !== "darwin") {
    const run = path.join(sys.runUserDir, String(sys.uid));
    if (sys.isPrivateDir(run, sys.uid)) return path.join(run, "blauth", "blauthd.sock");
  }
  return path.join(env.TMPDIR || "/tmp", `blauth-${sys.uid}`, "blauthd.sock");
}

// socketPath returns where blauthd listens: $BLAUTH_SOCKET; else $XDG_RUNTIME_DIR/blauth/blauthd.sock
// when XDG_RUNTIME_DIR is absolute; else /run/user/UID/blauth/blauthd.sock when that directory is
// the user's and private; else ${TMPDIR:-/tmp}/blauth-UID/blauthd.sock.
function socketPath(env = process.env) {
  if (env.BLAUTH_SOCKET) return env.BLAUTH_SOCKET;
  if (typeof process.getuid !== "function") {
    throw new BlauthError("unreachable", "blauthd runs on Unix systems only", "set BLAUTH_SOCKET to the daemon's socket");
  }
  return socketPathFor(env, { platform: process.platform, uid: process.getuid(), runUserDir: "/run/user", isPrivateDir });
}

// ---------------------------------------------------------------------------------------------
// The wire: key=value lines ended by an empty line.

const badValue = (v) => /[\r\n\0]/.test(v);
const validKey = (k) => k.length > 0 && k.length <= 128 && /^[\x21-\x3c\x3e-\x7e]+$/.test(k);

function encode(fields) {
  if (fields.length > MAX_REQUEST_FIELDS) {
    throw new BlauthError("bad_request", `the request has ${fields.length} fields, over the ${MAX_REQUEST_FIELDS} blauthd accepts`);
  }
  let s = "";
  for (const [k, v] of fields) {
    // Never quote the value in an error: it may be a secret.
    if (!validKey(k)) throw new BlauthError("bad_request", `${JSON.stringify(k)} cannot be a key of the protocol`);
    if (badValue(v)) throw new BlauthError("bad_request", `the value of ${k} holds CR, LF or NUL, which cannot be sent to blauthd`);
    s += `${k}=${v}\n`;
  }
  const data = Buffer.from(s + "\n", "utf8");
  if (data.length > MAX_REQUEST) {
    throw new BlauthError("bad_request", `the request is ${data.length} bytes, over the ${MAX_REQUEST} blauthd accepts`);
  }
  return data;
}

// MessageReader splits a byte stream into messages, each an object holding the first value of
// every key (the protocol's rule). push returns the messages a chunk completed; it throws a
// bad_answer BlauthError on input that breaks the grammar or a limit (the stream is then out of
// step).
class MessageReader {
  constructor() {
    this.pending = Buffer.alloc(0);
    this.fields = {};
    this.count = 0;
    this.size = 0;
  }

  push(chunk) {
    const out = [];
    const buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break;
      const line = buf.subarray(start, nl);
      start = nl + 1;
      if (line.length > MAX_LINE) throw new BlauthError("bad_answer", `blauthd sent a line over ${MAX_LINE} bytes`);
      this.size += line.length + 1;
      if (this.size > MAX_ANSWER) throw new BlauthError("bad_answer", `blauthd sent an answer over ${MAX_ANSWER} bytes`);
      if (line.length === 0) {
        const msg = this.fields;
        this.fields = {};
        this.count = 0;
        this.size = 0;
        out.push(msg);
        continue;
      }
      const text = line.toString("utf8");
      const eq = text.indexOf("=");
      if (eq <= 0 || !validKey(text.slice(0, eq)) || /[\r\0]/.test(text)) {
        throw new BlauthError("bad_answer", "blauthd sent a malformed line");
      }
      if (++this.count > 16384) throw new BlauthError("bad_answer", "blauthd sent an answer with too many fields");
      const key = text.slice(0, eq);
      if (!Object.prototype.hasOwnProperty.call(this.fields, key)) this.fields[key] = text.slice(eq + 1);
    }
    this.pending = buf.subarray(start);
    if (this.pending.length > MAX_LINE) throw new BlauthError("bad_answer", `blauthd sent a line over ${MAX_LINE} bytes`);
    return out;
  }
}

function errorFrom(answer) {
  return new BlauthError(answer.code || "internal", answer.message || "blauthd reported an error without a message", answer.hint || "");
}

function redacted(value) {
  return `<${value.length} chars>`;
}

// tokenFrom turns a successful answer into the token object callers get.
function tokenFrom(answer) {
  if (!answer.token) throw new BlauthError("bad_answer", "blauthd's answer holds no token");
  const sec = Number(answer.expiry || "0");
  if (!Number.isSafeInteger(sec) || sec < 0) throw new BlauthError("bad_answer", "blauthd's answer holds a malformed expiry");
  const tok = {
    token: answer.token,
    workspace: answer.workspace || "",
    expiry: sec === 0 ? null : new Date(sec * 1000),
    kind: answer.kind || "",
    source: answer.source || "",
    hint: answer.hint || "",
  };
  // console.log(tok) shows the token's length, not the token.
  Object.defineProperty(tok, inspectCustom, {
    value(depth, options, inspect) {
      return "Token " + inspect({ ...this, token: redacted(this.token) }, options);
    },
  });
  return Object.freeze(tok);
}

function connectionError(err, socket) {
  if (["ENOENT", "ECONNREFUSED", "ENOTDIR", "ENOTSOCK", "EACCES", "ECONNRESET", "EPIPE"].includes(err.code)) {
    return new BlauthError(
      "unreachable",
      `no blauthd answers on ${socket}: ${err.code}`,
      "start it with 'systemctl --user start blauthd.socket' or 'blauthd &', or run any 'blauth-helper' command",
      { cause: err },
    );
  }
  return new BlauthError("unreachable", `cannot talk to blauthd on ${socket}: ${err.message}`, "", { cause: err });
}

// onMessages reads conn's bytes as messages of the protocol and passes each to take, in order;
// bytes that break the protocol go to broken as a bad_answer BlauthError instead.
function onMessages(conn, take, broken) {
  const reader = new MessageReader();
  conn.on("data", (chunk) => {
    let msgs;
    try {
      msgs = reader.push(chunk);
    } catch (e) {
      broken(e);
      return;
    }
    for (const msg of msgs) take(msg);
  });
}

// roundTrip sends one request on a new connection and resolves to the first answer message.
function roundTrip(socket, data, timeoutMs) {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err, answer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      conn.destroy();
      if (err) reject(err);
      else resolve(answer);
    };
    const conn = net.createConnection({ path: socket }, () => conn.write(data));
    const timer = setTimeout(
      () => finish(new BlauthError("timeout", `blauthd did not answer within ${timeoutMs / 1000} s`)),
      timeoutMs,
    );
    onMessages(conn, (msg) => finish(null, msg), finish);
    conn.on("error", (e) => finish(connectionError(e, socket)));
    conn.on("close", () => finish(new BlauthError("unreachable", "blauthd closed the connection before answering")));
  });
}

// ---------------------------------------------------------------------------------------------
// Requests.

function checkValue(name, v) {
  if (typeof v !== "string") throw new BlauthError("bad_request", `${name} must be a string`);
  if (badValue(v)) throw new BlauthError("bad_request", `${name} holds CR, LF or NUL, which cannot be sent to blauthd`);
  return v;
}

// requestFields builds the fields of a get or watch: the workspace, the caller's directory and
// BL_* variables (so that its .env and environment count, as they do for Blaxel's SDKs), min_ttl.
// Its callers encode them at once, which refuses an oversized request before any connection.
function requestFields(action, { workspace, minTTL, cwd, env } = {}) {
  const fields = [
    ["version", String(PROTOCOL_VERSION)],
    ["action", action],
  ];
  if (workspace !== undefined && workspace !== null && workspace !== "") {
    fields.push(["workspace", checkValue("the workspace name", workspace)]);
  }
  if (cwd === undefined) {
    try {
      cwd = process.cwd();
    } catch {
      cwd = null; // the directory was removed: the daemon then ignores any .env
    }
  }
  if (cwd !== null && cwd !== false) {
    checkValue("cwd", cwd);
    if (!path.isAbsolute(cwd)) throw new BlauthError("bad_request", `cwd ${JSON.stringify(cwd)} is not an absolute path`);
    if (Buffer.byteLength(cwd) > MAX_CWD) throw new BlauthError("bad_request", `cwd is over ${MAX_CWD} bytes`);
    fields.push(["cwd", cwd]);
  }
  const vars = env === undefined ? process.env : env;
  if (vars === null || typeof vars !== "object") throw new BlauthError("bad_request", "env must be an object");
  for (const name of Object.keys(vars).sort()) {
    if (!name.startsWith("BL_") || vars[name] === undefined) continue;
    if (!validKey("env." + name)) throw new BlauthError("bad_request", `the variable name ${JSON.stringify(name)} cannot be sent to blauthd`);
    fields.push(["env." + name, checkValue(name, String(vars[name]))]);
  }
  if (minTTL !== undefined && minTTL !== null) {
    if (typeof minTTL !== "number" || !Number.isFinite(minTTL) || minTTL < 0 || minTTL > 2 ** 31) {
      throw new BlauthError("bad_request", "minTTL must be a number of seconds, 0 or more");
    }
    fields.push(["min_ttl", String(Math.ceil(minTTL))]);
  }
  return fields;
}

// token resolves to one token, {token, workspace, expiry, kind, source, hint}, for this process:
// its BL_* variables and its directory's .env count as they do for Blaxel's SDKs.
async function token(opts = {}) {
  const fields = requestFields("get", opts);
  const data = encode(fields);
  const socket = opts.socket || socketPath();
  const timeoutMs = opts.timeoutMs ?? ANSWER_TIMEOUT_MS;
  let answer = await roundTrip(socket, data, timeoutMs);
  if (answer.status !== "ok" && answer.code === "unsupported_version") {
    // A daemon started before an upgrade speaks version 1 only: ask again in its version.
    fields[0] = ["version", "1"];
    answer = await roundTrip(socket, encode(fields), timeoutMs);
  }
  if (answer.status !== "ok") throw errorFrom(answer);
  return tokenFrom(answer);
}

// ---------------------------------------------------------------------------------------------
// watch: one connection that the daemon answers at once and again at every change.

class Watch extends EventEmitter {
  #data;
  #socket;
  #conn = null;
  #timer = null;
  #delay = 0;
  #closed = false;
  #tok = null;
  #workspace = "";
  #lastError = null;
  #waiters = new Set();
  #minTTL;

  constructor(opts = {}) {
    super();
    this.#data = encode(requestFields("watch", opts)); // once: every reconnect sends these bytes
    this.#socket = opts.socket || socketPath();
    this.#minTTL = opts.minTTL ?? DEFAULT_MIN_TTL;
    this.#workspace = opts.workspace || "";
    this.#connect();
  }

  // current returns the latest token, or null when there is none, it expired, or the daemon
  // said it can no longer serve one (a logout, a refused credential).
  current() {
    const t = this.#tok;
    if (t === null || this.#closed) return null;
    if (t.expiry !== null && t.expiry.getTime() <= Date.now()) return null;
    return t;
  }

  // workspace is the workspace of the latest answer (or the one asked for), even when no
  // token is held now.
  get workspace() {
    return this.#workspace;
  }

  // lastError is the latest problem not yet followed by a token, or null.
  get lastError() {
    return this.#lastError;
  }

  get closed() {
    return this.#closed;
  }

  // fresh resolves to a token with more than minTTL seconds of life left: the current one, or
  // the next one the daemon sends. It rejects at once when the watch is closed or the latest
  // answer is an error that waiting cannot cure (no_credentials, auth_failed, …), and after
  // timeoutMs with the latest problem (or a timeout).
  fresh({ minTTL = this.#minTTL, timeoutMs = WAIT_TIMEOUT_MS } = {}) {
    const good = () => {
      const t = this.current();
      return t && (t.expiry === null || t.expiry.getTime() - Date.now() > minTTL * 1000) ? t : null;
    };
    const now = good();
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const stop = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const check = () => {
        const t = good();
        if (t) {
          stop();
          resolve(t);
        } else if (this.#closed) {
          stop();
          reject(new BlauthError("closed", "the watch was closed"));
        } else if (this.#lastError && PERMANENT.has(this.#lastError.code)) {
          stop();
          reject(this.#lastError);
        }
      };
      const timer = setTimeout(() => {
        stop();
        reject(
          this.#lastError ||
            new BlauthError("timeout", `blauthd sent no token with more than ${minTTL} s of life within ${timeoutMs / 1000} s`),
        );
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  // ready resolves to the current token, or the first one to come; it rejects as fresh does.
  ready({ timeoutMs = WAIT_TIMEOUT_MS } = {}) {
    return this.fresh({ minTTL: 0, timeoutMs });
  }

  // close ends the watch: the connection, the reconnects, the waits (they reject with code
  // closed) and every for-await loop over it. The process can then exit. Safe to call twice.
  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    if (this.#conn) this.#conn.destroy();
    this.#conn = null;
    this.#wake();
    this.emit("close");
  }

  // Each iteration yields the next token not yet yielded by this loop (the current one first):
  // a slow loop skips tokens that were already replaced, which loses nothing, as each token
  // replaces the one before. Leaving the loop (break, return, throw) closes the watch.
  [Symbol.asyncIterator]() {
    let seen = null;
    return {
      next: () =>
        new Promise((resolve) => {
          const check = () => {
            if (this.#closed) {
              this.#waiters.delete(check);
              resolve({ value: undefined, done: true });
              return;
            }
            const t = this.current();
            if (t && t !== seen) {
              seen = t;
              this.#waiters.delete(check);
              resolve({ value: t, done: false });
            }
          };
          this.#waiters.add(check);
          check();
        }),
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  [inspectCustom]() {
    const t = this.current();
    return `Watch { workspace: ${JSON.stringify(this.#workspace)}, token: ${t ? redacted(t.token) : "null"}, ` +
      `expiry: ${t && t.expiry ? t.expiry.toISOString() : "null"}, closed: ${this.#closed} }`;
  }

  #wake() {
    for (const w of [...this.#waiters]) w();
  }

  // 'error' is emitted only when someone listens: a watch must not crash a process that chose
  // to ignore its problems (it goes on reconnecting).
  #problem(err) {
    if (this.listenerCount("error") > 0) this.emit("error", err);
  }

  #connect() {
    if (this.#closed) return;
    const socket = this.#socket;
    const conn = net.createConnection({ path: socket }, () => conn.write(this.#data));
    this.#conn = conn;
    let over = false;
    let expected = false; // the daemon said why it ends the stream: its end is no new problem
    const firstAnswer = setTimeout(
      () => lost(new BlauthError("timeout", `blauthd did not answer the watch within ${ANSWER_TIMEOUT_MS / 1000} s`)),
      ANSWER_TIMEOUT_MS,
    );
    const lost = (err) => {
      if (over) return;
      over = true;
      clearTimeout(firstAnswer);
      conn.destroy();
      if (this.#conn === conn) this.#conn = null;
      if (this.#closed) return;
      this.#delay = Math.min(Math.max(2 * this.#delay, BACKOFF_FIRST_MS), BACKOFF_MAX_MS);
      this.#timer = setTimeout(() => this.#connect(), this.#delay);
      if (err) this.#lastError = err;
      this.#wake();
      if (err) this.#problem(err);
    };
    // take applies one message to the state, then tells waiters and listeners. A listener that
    // throws is the caller's bug, thrown as from any EventEmitter, never taken for a bad answer.
    const take = (msg) => {
      if (over || this.#closed) return;
      clearTimeout(firstAnswer);
      if (msg.status === "ok") {
        let t;
        try {
          t = tokenFrom(msg);
        } catch (e) {
          lost(e);
          return;
        }
        this.#tok = t;
        this.#workspace = t.workspace || this.#workspace;
        this.#lastError = null;
        this.#delay = 0;
        this.#wake();
        this.emit("token", t);
        return;
      }
      const err = errorFrom(msg);
      if (err.code === "shutting_down") {
        expected = true; // the token held is still good: keep it while reconnecting
      } else {
        this.#tok = null; // a logout, a refused credential, no token with min_ttl left
      }
      // After these the daemon closes the connection (bad_request, forbidden) or has nothing
      // to stream (a daemon older than watch): the end that follows is no news.
      if (["bad_request", "forbidden", "unsupported_version", "unknown_action"].includes(err.code)) expected = true;
      if (err.code === "unsupported_version" || err.code === "unknown_action") {
        err.hint = "this blauthd is older than watch (protocol version 2): restart it, e.g. 'blauth-helper stop'";
      }
      this.#lastError = err;
      this.#wake();
      this.#problem(err);
      // A daemon older than watch would leave the connection idle: try again later instead.
      if (err.code === "unsupported_version" || err.code === "unknown_action") lost(null);
    };
    onMessages(conn, take, lost);
    conn.on("error", (e) => lost(connectionError(e, socket)));
    conn.on("close", () =>
      lost(expected ? null : new BlauthError("unreachable", "blauthd ended the watch; reconnecting")),
    );
  }
}

// watch starts following the token for this process (the same selection as token(opts)) and
// returns a Watch: an EventEmitter ('token', 'error', 'close') and an async iterator of tokens,
// with current(), ready(), fresh() and close(). It never starts a daemon: it reconnects by
// itself (250 ms doubling to 4 s) when the daemon restarts, or once one is back after a stop
// (socket activation, or the user's next blauth-helper command). It keeps the process alive
// until close().
function watch(opts = {}) {
  return new Watch(opts);
}

// ---------------------------------------------------------------------------------------------
// useBlauth: the Blaxel TypeScript SDK's credentials, served by the daemon.

// BlauthCredentials is what useBlauth puts in @blaxel/core's settings.credentials. The SDK awaits
// authenticate() before every request, then reads workspace and authorization (its headers
// X-Blaxel-Workspace and X-Blaxel-Authorization); some paths (MCP over WebSocket) read token.
class BlauthCredentials {
  #watch;
  #minTTL;
  #timeoutMs;

  constructor(w, { minTTL = DEFAULT_MIN_TTL, timeoutMs = WAIT_TIMEOUT_MS } = {}) {
    this.#watch = w;
    this.#minTTL = minTTL;
    this.#timeoutMs = timeoutMs;
  }

  // authenticate resolves once a token with more than minTTL seconds left is held; it never
  // resolves on an expired one. It rejects with a BlauthError when none comes in time.
  async authenticate() {
    await this.#watch.fresh({ minTTL: this.#minTTL, timeoutMs: this.#timeoutMs });
  }

  get workspace() {
    return this.#watch.workspace;
  }

  get token() {
    const t = this.#watch.current();
    return t ? t.token : "";
  }

  get authorization() {
    const t = this.token;
    return t ? `Bearer ${t}` : "";
  }

  [inspectCustom]() {
    return `BlauthCredentials { workspace: ${JSON.stringify(this.workspace)} }`;
  }
}

// Where to look for the caller's @blaxel/core: beside the main script, in the working directory,
// then beside this package.
function sdkAnchors() {
  const dirs = [];
  const main = (require.main && require.main.filename) || process.argv[1];
  if (main) {
    try {
      dirs.push(path.dirname(fs.realpathSync(main)));
    } catch {
      // node -e, or a script that is gone
    }
  }
  try {
    dirs.push(process.cwd());
  } catch {
    // the working directory was removed
  }
  return [...new Set(dirs)];
}

function sdkNotFound(dirs, cause) {
  return new BlauthError(
    "sdk_not_found",
    `useBlauth could not load @blaxel/core from ${dirs.join(", ") || "anywhere"} or beside blauth`,
    "install @blaxel/core in your project, or pass its settings: useBlauth({ settings })",
    cause ? { cause } : undefined,
  );
}

// requireSettings loads the CommonJS build of the caller's @blaxel/core and returns its settings.
function requireSettings() {
  const dirs = sdkAnchors();
  for (const dir of dirs) {
    let mod;
    try {
      mod = createRequire(path.join(dir, "noop.js"))("@blaxel/core");
    } catch (e) {
      if (e.code === "MODULE_NOT_FOUND") continue;
      throw e;
    }
    if (mod && mod.settings) return mod.settings;
  }
  try {
    return require("@blaxel/core").settings;
  } catch (e) {
    throw sdkNotFound(dirs, e);
  }
}

// install points settings.credentials at the watch, and checks that the SDK kept it.
function install(settings, w, opts) {
  if (settings === null || typeof settings !== "object") {
    throw new BlauthError("bad_request", "settings must be the settings object exported by @blaxel/core");
  }
  const creds = new BlauthCredentials(w, { minTTL: opts.minTTL ?? DEFAULT_MIN_TTL, timeoutMs: opts.timeoutMs ?? WAIT_TIMEOUT_MS });
  settings.credentials = creds;
  if (settings.credentials !== creds) {
    throw new BlauthError("sdk_not_found", "this @blaxel/core does not accept settings.credentials");
  }
  return creds;
}

// useBlauthWith is useBlauth once the settings object is known (the ESM entry finds its own).
async function useBlauthWith(settings, opts) {
  const w = watch(opts);
  let creds;
  try {
    await w.ready({ timeoutMs: opts.timeoutMs ?? WAIT_TIMEOUT_MS });
    creds = install(settings, w, opts);
  } catch (e) {
    w.close();
    throw e;
  }
  return {
    credentials: creds,
    watcher: w,
    current: () => w.current(),
    close: () => w.close(),
  };
}

// useBlauth makes the Blaxel TypeScript SDK take every token from blauthd: it starts a watch,
// waits for the first token (so the workspace is known before the first request), and sets
// settings.credentials. It resolves to a handle {current(), close(), credentials, watcher};
// close() ends the watch so that the process can exit.
async function useBlauth(opts = {}) {
  const settings = opts.settings || requireSettings();
  return useBlauthWith(settings, opts);
}

module.exports = {
  token,
  watch,
  useBlauth,
  socketPath,
  BlauthError,
  Watch,
  BlauthCredentials,
  // For the ESM entry and the tests; not a stable interface.
  _internal: { useBlauthWith, sdkAnchors, sdkNotFound, socketPathFor, isPrivateDir, encode, MessageReader, requestFields },
};
