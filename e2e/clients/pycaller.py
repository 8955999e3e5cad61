"""One long-running Blaxel client of the end-to-end suite e2e/clients, in Python: it holds no
secret, follows blauthd's watch through clients/python/blauth.py (a Watcher and its urllib
handler), and calls GET $BL_API_URL/models every 1 to 2 s for $E2E_DURATION seconds with the
daemon's latest token, one with at least $E2E_MIN_TTL seconds left (the client's default when
unset). It prints one JSON line of counts (never a token) and exits 0 when every call
succeeded."""

import hashlib
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request

import blauth


def call(opener, base):
    with opener.open(base + "/models", timeout=30) as resp:
        body = json.loads(resp.read())
    if not isinstance(body, list) or not body:  # no Blaxel-Version asked for: a bare list
        raise ValueError("unexpected body %.200r" % body)


def main():
    base = os.environ["BL_API_URL"]
    duration = float(os.environ["E2E_DURATION"])
    min_ttl = float(os.environ["E2E_MIN_TTL"]) if os.environ.get("E2E_MIN_TTL") else None
    r = {"calls": 0, "ok": 0, "failed": 0, "tokens": 0, "errors": []}
    seen = set()
    with blauth.Watcher(min_ttl=min_ttl) as watcher:
        opener = urllib.request.build_opener(blauth.BlauthAuth(watcher))
        end = time.monotonic() + duration
        while time.monotonic() < end:
            time.sleep(1 + random.random())
            try:
                seen.add(hashlib.sha256(watcher.token().token.encode()).hexdigest())
            except blauth.BlauthError:
                pass
            r["calls"] += 1
            try:
                call(opener, base)
                r["ok"] += 1
            except (urllib.error.URLError, OSError, ValueError, blauth.BlauthError) as e:
                r["failed"] += 1
                if len(r["errors"]) < 5:
                    detail = e.read().decode("utf-8", "replace") if isinstance(e, urllib.error.HTTPError) else ""
                    r["errors"].append("%s %s %s" % (time.strftime("%H:%M:%S"), e, detail))
    r["tokens"] = len(seen)
    print(json.dumps(r), flush=True)
    return 0 if r["failed"] == 0 and r["calls"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
