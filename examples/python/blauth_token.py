#!/usr/bin/env python3
"""A drop-in for `bl token`, built on the Python client library (clients/python):

    python3 blauth_token.py [--json] [WORKSPACE]

prints the daemon's token for this process (its BL_* variables and its directory's .env count)
and exits as blauth-helper does. In your own code, the library alone does it:

    import blauth                      # clients/python/blauth.py, on sys.path or copied
    tok = blauth.token()               # or blauth.token(workspace="acme", min_ttl=300)
    headers = tok.headers()            # X-Blaxel-Authorization, X-Blaxel-Workspace
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
import blauth  # noqa: E402

# Exit statuses by error code: docs/HELPER.md's table (3 is "no daemon answers", 1 the rest).
EXIT = {"bad_request": 2, "unreachable": 3, "no_workspace": 4, "no_credentials": 4, "bad_source": 4,
        "auth_failed": 5, "unavailable": 6, "busy": 6, "keyring_unavailable": 7}


def main(argv):
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: blauth_token.py [--json] [WORKSPACE]", file=sys.stderr)
        return 2
    try:
        tok = blauth.token(workspace=args[0] if args else None)
    except blauth.BlauthError as e:
        print("blauth: error: %s: %s" % (e.code, e.message), file=sys.stderr)  # never the token
        if e.hint:
            print("blauth: hint: %s" % e.hint, file=sys.stderr)
        return EXIT.get(e.code, 1)
    except ValueError as e:  # what the library will not send: a line break in a value
        msg = str(e)
        print("blauth: error: %s" % (msg[8:] if msg.startswith("blauth: ") else msg), file=sys.stderr)
        return EXIT["bad_request"]
    expiry = int(tok.expiry.timestamp()) if tok.expiry else 0
    print(json.dumps({"token": tok.token, "workspace": tok.workspace, "expiry": expiry}) if as_json else tok.token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
