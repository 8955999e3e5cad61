#!/usr/bin/env node
// A drop-in for `bl token`, built on the Node client library (clients/node):
//
//   node blauth-token.js [--json] [WORKSPACE]
//
// prints the daemon's token for this process (its BL_* variables and its directory's .env
// count) and exits as blauth-helper does. In your own code, the library alone does it:
//
//   const { token, BlauthError } = require("blauth");   // here: require("../../clients/node")
//   const t = await token();                             // or token({ workspace: "acme" })
//   fetch(url, { headers: { "X-Blaxel-Authorization": `Bearer ${t.token}`, "X-Blaxel-Workspace": t.workspace } });
"use strict";

const { token, BlauthError } = require("../../clients/node");

// Exit statuses by error code: docs/HELPER.md's table (3 is "no daemon answers", 1 the rest).
const EXIT = { bad_request: 2, unreachable: 3, no_workspace: 4, no_credentials: 4, bad_source: 4,
  auth_failed: 5, unavailable: 6, busy: 6, keyring_unavailable: 7 };

async function main(argv) {
  const json = argv.includes("--json");
  const args = argv.filter((a) => a !== "--json");
  if (args.length > 1 || args.some((a) => a.startsWith("-"))) {
    process.stderr.write("usage: blauth-token.js [--json] [WORKSPACE]\n");
    return 2;
  }
  try {
    const t = await token({ workspace: args[0] });
    const expiry = t.expiry ? Math.floor(t.expiry.getTime() / 1000) : 0;
    process.stdout.write((json ? JSON.stringify({ token: t.token, workspace: t.workspace, expiry }) : t.token) + "\n");
    return 0;
  } catch (e) {
    if (!(e instanceof BlauthError)) throw e;
    process.stderr.write(`blauth: error: ${e.code}: ${e.message}\n`); // never the token
    if (e.hint) process.stderr.write(`blauth: hint: ${e.hint}\n`);
    return EXIT[e.code] || 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
