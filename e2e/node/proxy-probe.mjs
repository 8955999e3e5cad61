// A child of `blauth-helper exec --proxy`: it sees what the proxy gave it (BL_API_URL,
// BL_RUN_URL, BL_WORKSPACE, and BL_API_KEY, the run's secret) and calls URLs with it, as any
// HTTP client would. It never prints the secret: it reports whether a body echoed it back.
//
//   node proxy-probe.mjs hold     print {"api","run","workspace","keyLength"}, then wait for the
//                                 end of stdin (keeps the run, and its proxy, alive)
//   node proxy-probe.mjs fetch    for each probe of E2E_PROBES (a JSON array of {name, url,
//                                 form}), print {"name","status","body","echoedSecret"};
//                                 url may start with $API or $RUN (this run's own proxy);
//                                 form: "x-blaxel", "authorization", "both" or "none"
//   node proxy-probe.mjs stream URL   GET URL (may start with $RUN) and print {"event":"first"}
//                                 as soon as the first bytes arrive, then {"event":"end",
//                                 "text": everything} when the body ends
// Every line is one JSON object. Exit status 0 unless something could not run at all.
const key = process.env.BL_API_KEY ?? "";
const expand = (u) => u.replace(/^\$API/, process.env.BL_API_URL ?? "").replace(/^\$RUN/, process.env.BL_RUN_URL ?? "");
const out = (v) => process.stdout.write(JSON.stringify(v) + "\n");

function headers(form) {
  const h = {};
  if (form === "x-blaxel" || form === "both") h["X-Blaxel-Authorization"] = `Bearer ${key}`;
  if (form === "authorization" || form === "both") h["Authorization"] = `Bearer ${key}`;
  return h;
}

const mode = process.argv[2];
if (mode === "hold") {
  out({ api: process.env.BL_API_URL, run: process.env.BL_RUN_URL, workspace: process.env.BL_WORKSPACE, keyLength: key.length });
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.on("end", resolve));
} else if (mode === "fetch") {
  for (const p of JSON.parse(process.env.E2E_PROBES ?? "[]")) {
    try {
      const r = await fetch(expand(p.url), { headers: { ...headers(p.form), "X-Probe": p.name } });
      const body = await r.text();
      out({ name: p.name, status: r.status, body: body.slice(0, 2000), echoedSecret: key !== "" && body.includes(key) });
    } catch (err) {
      out({ name: p.name, status: 0, body: String(err?.cause?.message ?? err?.message ?? err), echoedSecret: false });
    }
  }
} else if (mode === "stream") {
  const r = await fetch(expand(process.argv[3]), { headers: headers("x-blaxel") });
  const decoder = new TextDecoder();
  let text = "";
  let first = true;
  for await (const chunk of r.body) {
    text += decoder.decode(chunk, { stream: true });
    if (first) {
      first = false;
      out({ event: "first", status: r.status, text });
    }
  }
  out({ event: "end", status: r.status, text, echoedSecret: key !== "" && text.includes(key) });
} else {
  process.stderr.write(`proxy-probe.mjs: unknown mode ${mode}\n`);
  process.exitCode = 2;
}
