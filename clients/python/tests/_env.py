"""What the tests of blauth.py need from the Go harness that runs them (e2e/clients,
TestPythonClient): a real blauthd behind socket activation, serving a service account of a fake
Blaxel API. Run them with `go test -tags sdk ./e2e/clients/ -run TestPythonClient`."""

import os
import tempfile
import unittest

import blauth

REQUIRED = ("BLAUTH_SOCKET", "BLAUTH_TEST_API_URL", "BLAUTH_TEST_WORKSPACE")


def setup():
    missing = [k for k in REQUIRED if not os.environ.get(k)]
    if missing:
        raise RuntimeError("set %s: run these tests through `go test -tags sdk ./e2e/clients/ -run TestPythonClient`"
                           % ", ".join(missing))


SOCKET = os.environ.get("BLAUTH_SOCKET", "")
API = os.environ.get("BLAUTH_TEST_API_URL", "")
WORKSPACE = os.environ.get("BLAUTH_TEST_WORKSPACE", "")


class Case(unittest.TestCase):
    """Each test gets an empty directory (no .env) and sends no BL_* variable of its own unless
    it says so."""

    def setUp(self):
        self._dir = tempfile.TemporaryDirectory(prefix="bpy")
        self.dir = self._dir.name
        self.addCleanup(self._dir.cleanup)

    def opts(self, **kw):
        o = {"socket": SOCKET, "cwd": self.dir, "env": {}}
        o.update(kw)
        return o


def request(fields, timeout=10):
    """Send one request to the daemon and return the answer (a dict)."""
    conn = blauth._Conn(SOCKET, timeout)
    try:
        conn.send(blauth._encode([("version", "2")] + list(fields)), timeout)
        return conn.read_message(timeout)
    finally:
        conn.close()


def served(workspace=None):
    """The token the daemon serves now, asked directly."""
    fields = [("action", "get")]
    if workspace:
        fields.append(("workspace", workspace))
    return request(fields)["token"]


def wait_for(cond, limit, what):
    import time
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (limit, what))
        time.sleep(0.02)


