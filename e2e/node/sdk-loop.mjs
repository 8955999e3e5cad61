// A long-running Blaxel SDK process: import the real @blaxel/core, call listModels()
// (GET {BL_API_URL}/models) every E2E_EVERY_MS milliseconds for E2E_DURATION_MS, and print one
// JSON line at the end:
//   {"calls":n,"ok":n,"failed":n,"errors":["…" (the first five)],"firstFailureAt":ms|null,
//    "startedAt":ms,"endedAt":ms}
// The SDK takes its credentials from its usual places (here BL_API_KEY and BL_WORKSPACE, read
// once, as a long-running program does); this script adds nothing. Exit status 0 when every
// call succeeded, 1 otherwise.
import { listModels } from "@blaxel/core";

const every = Number(process.env.E2E_EVERY_MS || 1000);
const duration = Number(process.env.E2E_DURATION_MS || 10000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const result = { calls: 0, ok: 0, failed: 0, errors: [], firstFailureAt: null, startedAt: Date.now(), endedAt: 0 };

function failed(at, msg) {
  result.failed++;
  if (result.firstFailureAt === null) result.firstFailureAt = at;
  if (result.errors.length < 5) result.errors.push(msg);
}

while (Date.now() - result.startedAt < duration) {
  const at = Date.now();
  result.calls++;
  try {
    const { data, error, response } = await listModels();
    const list = Array.isArray(data) ? data : Array.isArray(data?.data) ? data.data : [];
    if (error || !response?.ok || list.length === 0) {
      failed(at, `GET /models answered ${response?.status ?? 0}: ${typeof error === "string" ? error : JSON.stringify(error ?? null)}`);
    } else {
      result.ok++;
    }
  } catch (err) {
    failed(at, String(err?.message ?? err));
  }
  await sleep(Math.max(0, every - (Date.now() - at)));
}
result.endedAt = Date.now();
process.stdout.write(JSON.stringify(result) + "\n");
process.exitCode = result.failed === 0 ? 0 : 1;
