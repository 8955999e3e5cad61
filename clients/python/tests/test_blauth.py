"""blauth.py against a real blauthd (socket-activated) and a fake Blaxel API that checks every
call's token, expiry and workspace. See _env.py for how to run them."""

import asyncio
import json
import os
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

import blauth
from _env import API, SOCKET, WORKSPACE, Case, request, served, setup, wait_for


def setUpModule():
    setup()


class TokenTest(Case):
    def test_token_is_the_daemons(self):
        tok = blauth.token(**self.opts())
        self.assertEqual(tok.token, served())
        self.assertEqual(tok.workspace, WORKSPACE)
        self.assertEqual(tok.kind, "client_credentials")
        self.assertEqual(tok.source, "daemon_env:BL_CLIENT_CREDENTIALS")
        self.assertGreaterEqual(tok.remaining(), blauth.DEFAULT_MIN_TTL)
        self.assertEqual(tok.expiry.utcoffset().total_seconds(), 0)
        self.assertNotIn(tok.token, repr(tok))
        self.assertEqual(tok.headers(), {"X-Blaxel-Authorization": "Bearer " + tok.token,
                                         "X-Blaxel-Workspace": WORKSPACE})

    def test_socket_from_environment(self):
        # BLAUTH_SOCKET is how the harness points every client at its daemon.
        self.assertEqual(blauth.socket_path(), SOCKET)
        self.assertEqual(blauth.token(cwd=self.dir, env={}).token, served())

    def test_caller_environment_and_dotenv(self):
        tok = blauth.token(**self.opts(env={"BL_WORKSPACE": "mine", "BL_API_KEY": "caller-key", "HOME": "/x"}))
        self.assertEqual((tok.token, tok.workspace, tok.expiry, tok.kind), ("caller-key", "mine", None, "api_key"))
        proj = os.path.join(self.dir, "proj")
        os.mkdir(proj)
        with open(os.path.join(proj, ".env"), "w") as f:
            f.write("BL_WORKSPACE=proj\nBL_API_KEY=dotenv-key\n")
        tok = blauth.token(**self.opts(cwd=proj))
        self.assertTrue((tok.token, tok.workspace) == ("dotenv-key", "proj"),
                        "want the .env's key for proj, got a %s token for %s" % (tok.kind, tok.workspace))

    def test_errors(self):
        secret = "secret-value-never-shown"
        cases = [
            ("unknown workspace", dict(workspace="nobody"), blauth.BlauthError, "no_credentials"),
            ("no daemon", dict(socket=os.path.join(self.dir, "none.sock")), blauth.DaemonUnreachable, "unreachable"),
            ("min_ttl longer than tokens live", dict(min_ttl=3 * 3600), blauth.BlauthError, "unavailable"),
            ("line break in the workspace", dict(workspace="acme\naction=status"), ValueError, None),
            ("line break in a BL_ variable", dict(env={"BL_API_KEY": secret + "\nx"}), ValueError, None),
            ("relative directory", dict(cwd="project"), ValueError, None),
            ("negative min_ttl", dict(min_ttl=-1), ValueError, None),
        ]
        for name, kw, exc, code in cases:
            with self.subTest(name):
                with self.assertRaises(exc) as cm:
                    blauth.token(**self.opts(**kw))
                if code is not None:
                    self.assertEqual(cm.exception.code, code)
                self.assertNotIn(secret, str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            blauth.token(**self.opts(env={"BL_API_KEY": secret + "\n"}))
        self.assertIn("BL_API_KEY", str(cm.exception))


class WatchTest(Case):
    def test_watch_yields_every_refresh(self):
        # The harness's tokens live 40 s: the daemon refreshes each about 4 s after it was issued.
        w = blauth.watch(**self.opts())
        timer = threading.Timer(30, w.close)  # bounds the test
        timer.start()
        self.addCleanup(timer.cancel)
        with w:
            first = next(w)
            self.assertEqual(first.token, served())
            self.assertIs(w.current(), first)
            second = next(w)
            self.assertNotEqual(second.token, first.token)
            self.assertGreater(second.expiry, first.expiry)
            self.assertEqual(second.token, served())
        self.assertEqual(list(w), [])  # closed: iteration ends

    def test_watch_raises_error_answers_and_goes_on(self):
        with open(os.path.join(self.dir, ".env"), "w") as f:
            f.write("BL_WORKSPACE=proj\nBL_API_KEY=dotenv-key\n")
        with blauth.watch(**self.opts()) as w:
            self.assertEqual(next(w).token, "dotenv-key")
            with open(os.path.join(self.dir, ".env"), "w") as f:
                f.write("BL_WORKSPACE=proj\n")
            with self.assertRaises(blauth.BlauthError) as cm:
                next(w)
            self.assertEqual(cm.exception.code, "no_credentials")
            self.assertIsNone(w.current())
            with open(os.path.join(self.dir, ".env"), "w") as f:
                f.write("BL_WORKSPACE=proj\nBL_API_KEY=second-key\n")
            self.assertEqual(next(w).token, "second-key")

    def test_close_from_another_thread_ends_a_blocked_next(self):
        w = blauth.watch(**self.opts())
        next(w)
        threading.Timer(0.3, w.close).start()
        start = time.monotonic()
        with self.assertRaises(StopIteration):
            # No refresh comes within 0.3 s of the first token... unless one is due: then the
            # next one is a token, and the one after that is cut by close.
            next(w)
            next(w)
        self.assertLess(time.monotonic() - start, 5)

    def test_unreachable_at_start(self):
        with self.assertRaises(blauth.DaemonUnreachable):
            next(blauth.watch(**self.opts(socket=os.path.join(self.dir, "none.sock"))))
        with self.assertRaises(blauth.DaemonUnreachable):
            blauth.Watcher(**self.opts(socket=os.path.join(self.dir, "none.sock")))


class WatcherTest(Case):
    def test_urllib_handler_calls_the_api(self):
        with blauth.Watcher(**self.opts()) as watcher:
            opener = urllib.request.build_opener(blauth.BlauthAuth(watcher))
            with opener.open(API + "/models", timeout=10) as resp:
                body = json.loads(resp.read())
            self.assertEqual(len(body), 2)  # a bare list: no Blaxel-Version was asked for
            self.assertEqual(blauth.headers(watcher), watcher.token().headers())
            self.assertEqual(blauth.headers(**self.opts())["X-Blaxel-Workspace"], WORKSPACE)

    def test_urllib_handler_owns_its_watcher(self):
        handler = blauth.BlauthHandler(**self.opts())
        try:
            with urllib.request.build_opener(handler).open(API + "/models", timeout=10) as resp:
                self.assertEqual(resp.status, 200)
        finally:
            handler.close()
        self.assertFalse(handler.watcher._thread.is_alive())

    def test_urllib_handler_only_for_its_hosts(self):
        with blauth.Watcher(**self.opts()) as watcher:
            opener = urllib.request.build_opener(blauth.BlauthAuth(watcher, hosts=["api.blaxel.ai"]))
            with self.assertRaises(urllib.error.HTTPError) as cm:
                opener.open(API + "/models", timeout=10)
            self.assertEqual(cm.exception.code, 401)  # the fake API got no token
            self.assertEqual(json.loads(cm.exception.read())["error"], "no_token")

    def test_never_returns_a_token_under_min_ttl(self):
        with blauth.Watcher(**self.opts()) as watcher:
            first = watcher.token()
            # Stop this client's clock a second past the point where the first token falls under
            # the 30 s minimum (a suspend and resume would do that): the daemon, on its own
            # clock, has nothing new to say yet.
            frozen = first.expiry.timestamp() - blauth.DEFAULT_MIN_TTL + 1
            real, blauth._now = blauth._now, lambda: frozen
            try:
                with self.assertRaises(blauth.BlauthError) as cm:
                    watcher.token(wait=0.2)
                self.assertEqual(cm.exception.code, "unavailable")
                # With time to wait, token() waits for the daemon's next refresh (about 4 s after
                # the first token was issued) and returns that one.
                tok = watcher.token(wait=20)
                self.assertNotEqual(tok.token, first.token)
                self.assertGreaterEqual(tok.remaining(), blauth.DEFAULT_MIN_TTL)
            finally:
                blauth._now = real

    def test_close_ends_the_thread(self):
        before = threading.active_count()
        watcher = blauth.Watcher(**self.opts())
        self.assertTrue(watcher._thread.is_alive())
        watcher.close()
        watcher.close()
        self.assertFalse(watcher._thread.is_alive())
        self.assertLessEqual(threading.active_count(), before)
        with self.assertRaises(blauth.BlauthError) as cm:
            watcher.token()
        self.assertEqual(cm.exception.code, "closed")

    def test_error_at_start(self):
        with self.assertRaises(blauth.BlauthError) as cm:
            blauth.Watcher(**self.opts(workspace="nobody"))
        self.assertEqual(cm.exception.code, "no_credentials")

    def test_zz_reconnects_after_a_daemon_restart(self):
        # Last of the class (zz): it restarts the daemon.
        with blauth.Watcher(**self.opts()) as watcher:
            first = watcher.token()
            old_pid = request([("action", "ping")])["pid"]
            request([("action", "stop")])
            wait_for(lambda: not watcher.connected, 10, "the watcher to see the stream end")
            # The last token is still good while no daemon runs.
            self.assertEqual(watcher.token(wait=0).token, first.token)
            # The watcher's reconnection is the connection that makes socket activation start a
            # new daemon, which exchanges the service account again: the watcher takes its token.
            wait_for(lambda: watcher.connected and watcher.token().token != first.token, 20,
                     "the new daemon's token")
            self.assertEqual(watcher.token().token, served())
            self.assertNotEqual(request([("action", "ping")])["pid"], old_pid)


class BlaxelStandInTest(Case):
    """blaxel_auth against a STAND-IN of the Blaxel SDK's BlaxelAuth (tests/standin: a few lines
    following the SDK's published interface; the SDK itself cannot be installed here)."""

    def setUp(self):
        super().setUp()
        standin = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin")
        sys.path.insert(0, standin)
        self.addCleanup(sys.path.remove, standin)
        for m in [m for m in sys.modules if m == "blaxel" or m.startswith("blaxel.")]:
            del sys.modules[m]
        import blaxel.core.authentication as sdk_auth
        self.assertTrue(sdk_auth.STANDIN)
        self.sdk_auth = sdk_auth

    def test_adapter_follows_the_protocol(self):
        with blauth.Watcher(**self.opts()) as watcher:
            auth = blauth.blaxel_auth(watcher)
            self.assertIsInstance(auth, self.sdk_auth.BlaxelAuth)
            self.assertEqual(auth.workspace_name, WORKSPACE)
            self.assertEqual(auth.token, watcher.token().token)
            self.assertEqual(auth.get_headers(), watcher.headers())
            self.assertNotIn(auth.token, repr(auth))

            class Request:  # what auth_flow touches of an httpx.Request
                def __init__(self):
                    self.headers = {}

            req = Request()
            flow = auth.auth_flow(req)
            self.assertIs(next(flow), req)
            self.assertEqual(req.headers, watcher.headers())
            with self.assertRaises(StopIteration):
                flow.send(None)  # the response: nothing more to do

            async def drive():
                r = Request()
                agen = auth.async_auth_flow(r)
                self.assertIs(await agen.__anext__(), r)
                with self.assertRaises(StopAsyncIteration):
                    await agen.asend(None)
                return r.headers
            self.assertEqual(asyncio.run(drive()), watcher.headers())

    def test_adapter_owns_a_watcher_when_given_none(self):
        auth = blauth.blaxel_auth(**self.opts())
        try:
            self.assertEqual(auth.token, served())
        finally:
            auth.watcher.close()

    def test_without_the_sdk(self):
        sys.path.remove(os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin"))
        self.addCleanup(sys.path.insert, 0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin"))
        for m in [m for m in sys.modules if m == "blaxel" or m.startswith("blaxel.")]:
            del sys.modules[m]
        with self.assertRaises(ImportError) as cm:
            blauth.blaxel_auth(**self.opts())
        self.assertIn("Blaxel Python SDK", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
