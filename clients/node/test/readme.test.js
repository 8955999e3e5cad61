// The examples of README.md, run as a reader would paste them into a file of their own: `blauth`
// and `@blaxel/core` installed beside it, the API's URL pointed at the fake Blaxel API, nothing
// else changed. An example with `import` runs as an ES module (.mjs), the others as CommonJS.
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const { need, tempDir } = require("./helpers");

function examples() {
  const text = fs.readFileSync(path.join(__dirname, "..", "README.md"), "utf8");
  return [...text.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
}

test("the README holds its four examples", () => {
  assert.equal(examples().length, 4);
});

examples().forEach((code, i) => {
  const first = code.split("\n").find((l) => l.trim() !== "");
  test(`README example ${i + 1} runs as written (${first})`, (t) => {
    const dir = tempDir(t);
    const modules = path.join(dir, "node_modules");
    fs.mkdirSync(path.join(modules, "@blaxel"), { recursive: true });
    fs.symlinkSync(path.join(__dirname, ".."), path.join(modules, "blauth"));
    if (code.includes("@blaxel/core")) {
      fs.symlinkSync(path.join(need("BLAUTH_TEST_NODE_DIR"), "node_modules", "@blaxel", "core"), path.join(modules, "@blaxel", "core"));
    }
    const file = path.join(dir, /^import /m.test(code) ? "example.mjs" : "example.js");
    fs.writeFileSync(file, code.replaceAll("https://api.blaxel.ai/v0", need("BL_API_URL")));
    need("BLAUTH_SOCKET");
    const r = spawnSync(process.execPath, [file], { cwd: dir, env: process.env, encoding: "utf8", timeout: 60000 });
    assert.equal(r.error, undefined, String(r.error));
    assert.equal(r.status, 0, `exit ${r.status} (signal ${r.signal})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    assert.equal(r.stderr, "", "the example printed errors");
    if (code.includes("fetch(")) assert.match(r.stdout, /^200 for /, "the API refused the example's call");
  });
});
