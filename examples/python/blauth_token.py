#!/usr/bin/env python3
"""Get a Blaxel token from blauthd, with the Python standard library only.

Use it as a module:

    from blauth_token import get_token, BlauthError
    tok = get_token()                  # or get_token(workspace="acme")
    headers = {"X-Blaxel-Authorization": "Bearer " + tok["token"],
               "X-Blaxel-Workspace": tok["workspace"]}

or as a command, a drop-in for `bl token`:

    python3 blauth_token.py [--json] [WORKSPACE]

The protocol is described in docs/PROTOCOL.md.
"""

import json
import os
import socket
import stat
import sys

PROTOCOL_VERSION = "1"
MAX_MESSAGE = 64 << 10  # the daemon's limit on a message, in bytes
TIMEOUT = 35.0  # a get may wait up to 30 s for an exchange at the token endpoint

# Exit statuses, the same as blauth-helper's.
EXIT_ERROR, EXIT_UNREACHABLE, EXIT_NO_CREDS, EXIT_AUTH_FAILED, EXIT_UNAVAILABLE, EXIT_KEYRING = 1, 3, 4, 5, 6, 7
EXIT_BY_CODE = {
    "no_workspace": EXIT_NO_CREDS,
    "no_credentials": EXIT_NO_CREDS,
    "auth_failed": EXIT_AUTH_FAILED,
    "unavailable": EXIT_UNAVAILABLE,
    "keyring_unavailable": EXIT_KEYRING,
}


class BlauthError(Exception):
    """An error answer from blauthd. Branch on .code, never on the message."""

    def __init__(self, code, message, hint=""):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


class DaemonUnreachable(BlauthError):
    """No daemon listens on the socket. Its code, "unreachable", is this client's own: the
    daemon never sends it."""

    def __init__(self, path, err):
        super().__init__("unreachable", "no blauthd answers on %s: %s" % (path, err),
                         "start it with 'systemctl --user start blauthd.socket' or 'blauthd &'")


def _private_dir(path):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077 == 0


def socket_path(environ=None):
    """Where blauthd listens: the rule of ipc.SocketPath."""
    env = os.environ if environ is None else environ
    if env.get("BLAUTH_SOCKET"):
        return env["BLAUTH_SOCKET"]
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if (xdg == "~" or xdg.startswith("~/")) and env.get("HOME"):
        xdg = env["HOME"] + xdg[1:]
    if not os.path.isabs(xdg):
        xdg = ""  # a relative XDG_RUNTIME_DIR does not count
    if xdg:
        runtime = xdg
    elif sys.platform == "darwin":
        runtime = ""
    else:
        runtime = "/run/user/%d" % os.getuid()
    if runtime and (xdg or _private_dir(runtime)):
        return os.path.join(runtime, "blauth", "blauthd.sock")
    return os.path.join(env.get("TMPDIR") or "/tmp", "blauth-%d" % os.getuid(), "blauthd.sock")


def _valid_value(v):
    return not any(c in v for c in "\r\n\0")


def _valid_key(k):
    return 0 < len(k) <= 128 and all(" " < c < "\x7f" and c != "=" for c in k)


def _encode(fields):
    lines = []
    for k, v in fields:
        if not _valid_key(k) or not _valid_value(v):
            # Never quote the value: it may be a secret.
            raise ValueError("the value of %s holds CR, LF or NUL" % k)
        lines.append("%s=%s\n" % (k, v))
    data = ("".join(lines) + "\n").encode("utf-8", "surrogateescape")
    if len(data) > MAX_MESSAGE:
        raise ValueError("request over %d bytes" % MAX_MESSAGE)
    return data


def _read_message(sock):
    buf = b""
    while not (buf == b"\n" or buf.endswith(b"\n\n")):
        chunk = sock.recv(4096)
        if not chunk:
            raise BlauthError("bad_answer", "blauthd closed the connection before answering")
        buf += chunk
        if len(buf) > MAX_MESSAGE:
            raise BlauthError("bad_answer", "the answer is over %d bytes" % MAX_MESSAGE)
    answer = {}
    for line in buf.decode("utf-8", "replace").split("\n"):
        if not line:
            break
        k, sep, v = line.partition("=")
        if not sep or "\r" in v or "\0" in v:
            raise BlauthError("bad_answer", "malformed answer from blauthd")
        answer.setdefault(k, v)  # the first value of a key counts
    return answer


def request(fields, path=None, timeout=TIMEOUT):
    """Send one request (a list of (key, value)) and return the answer as a dict.
    Raises BlauthError for an error answer, DaemonUnreachable when no daemon listens."""
    data = _encode([("version", PROTOCOL_VERSION)] + list(fields))
    path = path or socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
            raise DaemonUnreachable(path, e.strerror or e) from None
        sock.sendall(data)
        answer = _read_message(sock)
    except socket.timeout:
        raise BlauthError("timeout", "blauthd did not answer within %gs" % timeout) from None
    finally:
        sock.close()
    if answer.get("status") != "ok":
        raise BlauthError(answer.get("code") or "internal", answer.get("message", ""), answer.get("hint", ""))
    return answer


def get_token(workspace=None, min_ttl=None, path=None):
    """Return {"token", "workspace", "expiry"} (expiry in Unix seconds, 0 when the token does
    not expire), resolved for this process: its BL_* variables and its directory's .env."""
    fields = [("action", "get")]
    if workspace:
        if not _valid_value(workspace):
            raise ValueError("the workspace name holds CR, LF or NUL")
        fields.append(("workspace", workspace))
    cwd = os.getcwd()
    if _valid_value(cwd):
        fields.append(("cwd", cwd))
    for k in sorted(os.environ):
        v = os.environ[k]
        if k.startswith("BL_") and _valid_key("env." + k) and _valid_value(v):
            fields.append(("env." + k, v))
    if min_ttl is not None:
        fields.append(("min_ttl", str(int(min_ttl))))
    answer = request(fields, path=path)
    if not answer.get("token"):
        raise BlauthError("bad_answer", "the answer holds no token")
    return {"token": answer["token"], "workspace": answer.get("workspace", ""),
            "expiry": int(answer.get("expiry") or 0)}


def main(argv):
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: blauth_token.py [--json] [WORKSPACE]", file=sys.stderr)
        return 2
    try:
        tok = get_token(args[0] if args else None)
    except BlauthError as e:
        print("blauth: error: %s: %s" % (e.code, e.message), file=sys.stderr)
        if e.hint:
            print("blauth: hint: %s" % e.hint, file=sys.stderr)
        return EXIT_UNREACHABLE if isinstance(e, DaemonUnreachable) else EXIT_BY_CODE.get(e.code, EXIT_ERROR)
    except (ValueError, OSError) as e:
        print("blauth: error: %s" % e, file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(tok) if as_json else tok["token"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
