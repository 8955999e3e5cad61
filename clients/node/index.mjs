// The ESM entry of blauth: the CommonJS implementation, and a useBlauth that finds the ESM build
// of @blaxel/core. A process that imports @blaxel/core gets that build's own settings object, not
// the CommonJS one's (Node loads the two builds as separate modules), so the credentials must go
// into the build the caller imported.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import blauth from "./index.js";

export const { token, watch, socketPath, BlauthError, Watch, BlauthCredentials } = blauth;
const { useBlauthWith, sdkAnchors, sdkNotFound } = blauth._internal;

// exportTarget follows a package.json "exports" value for the "." entry under Node's conditions
// for an import, and returns the relative path it names, or "".
function exportTarget(exp, conditions) {
  if (typeof exp === "string") return exp;
  if (Array.isArray(exp)) {
    for (const e of exp) {
      const t = exportTarget(e, conditions);
      if (t) return t;
    }
    return "";
  }
  if (exp === null || typeof exp !== "object") return "";
  const keys = Object.keys(exp);
  if (keys.some((k) => k.startsWith("."))) return exportTarget(exp["."], conditions);
  for (const k of keys) {
    if (conditions.includes(k)) {
      const t = exportTarget(exp[k], conditions);
      if (t) return t;
    }
  }
  return "";
}

// packageDir returns the directory of the package.json named name above file, or "".
function packageDir(file, name) {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
      if (pkg.name === name) return dir;
    } catch {
      // no package.json here
    }
    if (path.dirname(dir) === dir) return "";
  }
}

// importSettings imports the ESM build of the caller's @blaxel/core, found as Node would from the
// main script's directory or the working directory, else beside blauth, and returns its settings.
async function importSettings() {
  const dirs = sdkAnchors();
  for (const dir of dirs) {
    let main;
    try {
      main = createRequire(path.join(dir, "noop.js")).resolve("@blaxel/core");
    } catch {
      continue;
    }
    const root = packageDir(main, "@blaxel/core");
    if (!root) continue;
    const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
    const rel = exportTarget(pkg.exports, ["node", "import", "default"]) || pkg.module || pkg.main;
    if (!rel) continue;
    const mod = await import(pathToFileURL(path.join(root, rel)).href);
    if (mod.settings) return mod.settings;
  }
  try {
    return (await import("@blaxel/core")).settings;
  } catch (e) {
    throw sdkNotFound(dirs, e);
  }
}

// useBlauth: see index.js. Without opts.settings, the settings of the ESM build of @blaxel/core.
export async function useBlauth(opts = {}) {
  const settings = opts.settings || (await importSettings());
  return useBlauthWith(settings, opts);
}

export default { token, watch, useBlauth, socketPath, BlauthError, Watch, BlauthCredentials };
