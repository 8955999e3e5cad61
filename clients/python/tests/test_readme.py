"""The examples of clients/python/README.md, run as a reader would paste them into a file: only the
API's URL is pointed at the fake Blaxel API. See _env.py for how to run them."""

import os
import re
import subprocess
import sys
import threading

from _env import API, SOCKET, Case, setup

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "README.md")


def setUpModule():
    setup()


def examples():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [code.replace("https://api.blaxel.ai/v0", API) for code in re.findall(r"```python\n(.*?)```", text, re.S)]


class ReadmeTest(Case):
    def start(self, code):
        """Run code in its own interpreter, with blauth.py on PYTHONPATH and the harness's
        daemon (BLAUTH_SOCKET), no BL_* variable, in an empty directory."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BL_")}
        env.update(PYTHONPATH=os.path.join(HERE, ".."), BLAUTH_SOCKET=SOCKET, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.stderr.close)
        self.addCleanup(proc.stdout.close)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        # A bound on a broken example: it is killed (and fails below) rather than hang the suite.
        timer = threading.Timer(60, proc.kill)
        timer.start()
        self.addCleanup(timer.cancel)
        return proc

    def test_there_are_two_examples(self):
        self.assertEqual(len(examples()), 2)

    def test_long_running_example(self):
        # It loops for ever: its first line says that a call went through, then it is stopped.
        proc = self.start(examples()[0])
        line = proc.stdout.readline()
        if line != "2 models\n":
            proc.kill()
            self.fail("the example printed %r; stderr:\n%s" % (line, proc.stderr.read()))

    def test_one_token_example(self):
        proc = self.start(examples()[1])
        out, err = proc.communicate()
        self.assertEqual(proc.returncode, 0, err)
        self.assertEqual(out, "['X-Blaxel-Authorization', 'X-Blaxel-Workspace']\n")
