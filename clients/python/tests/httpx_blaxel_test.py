"""blaxel_auth inside the real httpx (the HTTP client the Blaxel Python SDK is built on), with a
STAND-IN of the SDK's BlaxelAuth (tests/standin; the SDK itself cannot be installed here),
calling the fake Blaxel API, which checks every call's token, expiry and workspace.

Not picked up by `unittest discover` (its name does not start with test_): the Go harness runs
it with an interpreter that has httpx (Debian's python3-httpx)."""

import asyncio
import os
import sys
import unittest

import httpx

import blauth
from _env import API, WORKSPACE, Case, setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin"))
import blaxel.core.authentication as sdk_auth  # noqa: E402  (the stand-in)


def setUpModule():
    setup()


class HTTPXTest(Case):
    def test_sync_and_async_clients(self):
        self.assertTrue(sdk_auth.STANDIN)
        with blauth.Watcher(**self.opts()) as watcher:
            auth = blauth.blaxel_auth(watcher, base_url=API)
            self.assertIsInstance(auth, httpx.Auth)
            with httpx.Client(auth=auth, timeout=10) as client:
                resp = client.get(API + "/models")
            self.assertEqual(resp.status_code, 200, resp.text)
            self.assertEqual(resp.request.headers["X-Blaxel-Workspace"], WORKSPACE)
            self.assertEqual(resp.request.headers["X-Blaxel-Authorization"], "Bearer " + watcher.token().token)

            async def call():
                async with httpx.AsyncClient(auth=auth, timeout=10) as client:
                    return await client.get(API + "/models")
            resp = asyncio.run(call())
            self.assertEqual(resp.status_code, 200, resp.text)


if __name__ == "__main__":
    unittest.main()
