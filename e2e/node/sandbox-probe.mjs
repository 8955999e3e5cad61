// A child of `blauth-helper exec --proxy` that uses a sandbox with the real @blaxel/core sandbox
// client, as a user's program does: SandboxInstance.get(E2E_SANDBOX), then a file written and
// read back, a command run, and the sandbox's preview E2E_PREVIEW fetched at its spec.url with
// the BL_API_KEY it was given. It does this E2E_ROUNDS times, E2E_EVERY_MS apart, printing one
// line per round:
//   {"round":i,"url":metadata.url,"h2Domain":…,"read":…,"stdout":…,"exitCode":…,
//    "previewStatus":…,"previewBody":…} or {"round":i,"error":"…"}
// then, when E2E_OUTSIDE names a second sandbox (one whose host is outside the run domains),
// {"outside":"reached"} or {"outside":"refused","error":"…"} for a read of a file there.
// It never prints BL_API_KEY. Exit status 0 unless something could not run at all.
import { SandboxInstance } from "@blaxel/core";

const key = process.env.BL_API_KEY ?? "";
const rounds = Number(process.env.E2E_ROUNDS || 1);
const every = Number(process.env.E2E_EVERY_MS || 0);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const out = (v) => process.stdout.write(JSON.stringify(v) + "\n");
const message = (err) => String(err?.message ?? err).replaceAll(key || "\0", "<secret>").slice(0, 500);

for (let i = 0; i < rounds; i++) {
  try {
    const sandbox = await SandboxInstance.get(process.env.E2E_SANDBOX);
    const text = `round ${i}`;
    await sandbox.fs.write("/tmp/round.txt", text);
    const read = await sandbox.fs.read("/tmp/round.txt");
    const proc = await sandbox.process.exec({ name: `echo-${i}`, command: `echo ${text}`, waitForCompletion: true });
    const preview = await sandbox.previews.get(process.env.E2E_PREVIEW);
    const r = await fetch(preview.spec.url, { headers: { Authorization: `Bearer ${key}` } });
    out({ round: i, url: sandbox.metadata.url, h2Domain: sandbox.h2Domain, read, stdout: proc.stdout, exitCode: proc.exitCode,
      previewStatus: r.status, previewBody: (await r.text()).slice(0, 200) });
  } catch (err) {
    out({ round: i, error: message(err) });
  }
  if (i + 1 < rounds) await sleep(every);
}
if (process.env.E2E_OUTSIDE) {
  try {
    const sandbox = await SandboxInstance.get(process.env.E2E_OUTSIDE);
    await sandbox.fs.read("/tmp/round.txt");
    out({ outside: "reached" });
  } catch (err) {
    out({ outside: "refused", error: message(err) });
  }
}
