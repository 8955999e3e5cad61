// The socket path rule, the daemon's (ipc.SocketPath): every case of docs/PROTOCOL.md.
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const fs = require("node:fs");
const path = require("node:path");
const blauth = require("..");
const { tempDir } = require("./helpers.js");

const { socketPathFor } = blauth._internal;

// sys describes a Linux machine whose /run/user/UID is private (or not, or absent).
function sys(runUser) {
  return {
    platform: "linux",
    uid: 1000,
    runUserDir: "/run/user",
    isPrivateDir: (dir, uid) => dir === "/run/user/1000" && uid === 1000 && runUser === "private",
  };
}

test("the socket path rule, first match wins", () => {
  const cases = [
    ["BLAUTH_SOCKET wins over everything", { BLAUTH_SOCKET: "/s/b.sock", XDG_RUNTIME_DIR: "/x" }, sys("private"), "/s/b.sock"],
    ["an absolute XDG_RUNTIME_DIR", { XDG_RUNTIME_DIR: "/xdg" }, sys("private"), "/xdg/blauth/blauthd.sock"],
    ["XDG_RUNTIME_DIR under ~", { XDG_RUNTIME_DIR: "~/run", HOME: "/home/me" }, sys("none"), "/home/me/run/blauth/blauthd.sock"],
    ["a relative XDG_RUNTIME_DIR counts as unset", { XDG_RUNTIME_DIR: "run" }, sys("private"), "/run/user/1000/blauth/blauthd.sock"],
    ["a private /run/user/UID", {}, sys("private"), "/run/user/1000/blauth/blauthd.sock"],
    ["no usable /run/user/UID: TMPDIR", { TMPDIR: "/var/tmp" }, sys("none"), "/var/tmp/blauth-1000/blauthd.sock"],
    ["no usable /run/user/UID, no TMPDIR: /tmp", {}, sys("shared"), "/tmp/blauth-1000/blauthd.sock"],
    ["macOS has no /run/user", {}, { ...sys("private"), platform: "darwin" }, "/tmp/blauth-1000/blauthd.sock"],
  ];
  for (const [name, env, s, want] of cases) {
    assert.strictEqual(socketPathFor(env, s), want, name);
  }
});

test("socketPath judges a real directory's owner and mode", (t) => {
  // The machine's /run/user is not ours to change: point the rule at a directory we own.
  const base = tempDir(t);
  const uid = process.getuid();
  const dir = path.join(base, String(uid));
  fs.mkdirSync(dir, { mode: 0o700 });
  const real = { platform: "linux", uid, runUserDir: base, isPrivateDir: require("..")._internal.isPrivateDir };
  assert.strictEqual(socketPathFor({}, real), path.join(dir, "blauth", "blauthd.sock"));
  fs.chmodSync(dir, 0o750);
  assert.strictEqual(socketPathFor({ TMPDIR: "/t" }, real), `/t/blauth-${uid}/blauthd.sock`, "a directory others can enter was used");
});

test("socketPath() reads BLAUTH_SOCKET from the given environment", () => {
  assert.strictEqual(blauth.socketPath({ BLAUTH_SOCKET: "/a/b.sock" }), "/a/b.sock");
});
