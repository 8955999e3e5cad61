// One Blaxel SDK call, as a short-lived script makes it: import the real @blaxel/core, call
// listModels() once (GET {BL_API_URL}/models), print one JSON line and exit.
//
// Output: {"ok":bool,"status":<HTTP status, 0 if none>,"error":"<message, empty on success>",
//          "models":<count>,"at":<ms since the epoch when the call began>}
// Exit status: 0 when the call succeeded, 1 otherwise.
//
// The SDK takes everything from its usual places (BL_WORKSPACE, BL_API_KEY,
// BL_CLIENT_CREDENTIALS, BL_API_URL, ./.env, ~/.blaxel/config.yaml); this script adds nothing.
// It reads credentials lazily, at the first call, so the config file is read at "at".
//
// E2E_CALL_AT_MS (optional, ms since the epoch): once the SDK is loaded, wait until then before
// calling. Loading the SDK takes one to two seconds; this lets a test place the call itself at an
// exact point of a token's life.
import { listModels } from "@blaxel/core";

const callAt = Number(process.env.E2E_CALL_AT_MS || 0);
const wait = callAt - Date.now();
if (wait > 0) {
  await new Promise((resolve) => setTimeout(resolve, wait));
}

function finish(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = result.ok ? 0 : 1;
}

const at = Date.now();
try {
  const { data, error, response } = await listModels();
  const status = response ? response.status : 0;
  if (error || !response || !response.ok) {
    const msg = typeof error === "string" ? error : JSON.stringify(error ?? null);
    finish({ ok: false, status, error: `GET /models answered ${status}: ${msg}`, models: 0, at });
  } else {
    const list = Array.isArray(data) ? data : Array.isArray(data?.data) ? data.data : [];
    finish({ ok: true, status, error: "", models: list.length, at });
  }
} catch (err) {
  // The SDK throws before sending when it has no credentials or its token refresh failed.
  finish({ ok: false, status: 0, error: String(err?.message ?? err), models: 0, at });
}
