"""Blaxel tokens from blauthd, for Python programs: the standard library only, Python 3.8+.

One token now:

    import blauth
    tok = blauth.token()                    # or token(workspace="acme", min_ttl=300)
    tok.token, tok.workspace, tok.expiry    # expiry: an aware datetime, None for API keys

A long-running process follows the daemon's watch stream instead, so that it always holds the
daemon's latest token without asking for one, and many processes cost the token endpoint no
more than one:

    watcher = blauth.Watcher(workspace="acme")      # a thread keeps the latest token
    opener = urllib.request.build_opener(blauth.BlauthAuth(watcher))
    opener.open("https://api.blaxel.ai/v0/models")  # X-Blaxel-Authorization, X-Blaxel-Workspace

    for tok in blauth.watch(workspace="acme"):      # or iterate: a Token at every change
        ...

The daemon is found as blauthd's clients find it ($BLAUTH_SOCKET, else
$XDG_RUNTIME_DIR/blauth/blauthd.sock, ...); the protocol is docs/PROTOCOL.md. Errors are
BlauthError with a machine-readable .code: branch on it, never on the message. Nothing here
logs, and no error message or repr() holds a token.
"""

import math
import os
import socket
import stat
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

__all__ = [
    "BlauthAuth",
    "BlauthError",
    "BlauthHandler",
    "DaemonUnreachable",
    "DEFAULT_MIN_TTL",
    "DEFAULT_WAIT",
    "Token",
    "Watch",
    "Watcher",
    "blaxel_auth",
    "headers",
    "socket_path",
    "token",
    "watch",
]

PROTOCOL_VERSION = "2"
DEFAULT_MIN_TTL = 30  # seconds: the daemon's own default minimum life of a served token
DEFAULT_WAIT = 5.0  # seconds a Watcher waits for a newer token when the latest is too old
DEFAULT_TIMEOUT = 30.0  # a get may wait about 25 s for the token endpoint
DIAL_TIMEOUT = 2.0
RECONNECT_FIRST, RECONNECT_MAX = 0.25, 4.0  # seconds between reconnections, doubling

MAX_REQUEST = 64 << 10  # the daemon's limits (ipc/wire.go)
MAX_ANSWER = 16 << 20
MAX_LINE = 16 << 10
MAX_DIR = 4096

AUTHORIZATION_HEADER = "X-Blaxel-Authorization"
WORKSPACE_HEADER = "X-Blaxel-Workspace"


class BlauthError(Exception):
    """An error answer from blauthd, or one of this client's own conditions. Branch on .code:
    the daemon's codes (no_workspace, no_credentials, auth_failed, unavailable, bad_request, ...,
    see docs/PROTOCOL.md), and this client's own: unreachable (DaemonUnreachable), timeout,
    bad_answer, closed."""

    def __init__(self, code, message, hint=""):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint

    def __repr__(self):
        return "BlauthError(%r, %r)" % (self.code, self.message)


class DaemonUnreachable(BlauthError):
    """No daemon answers on the socket (it does not exist, or nobody listens)."""

    def __init__(self, path, err):
        super().__init__("unreachable", "no blauthd answers on %s: %s" % (path, err),
                         "start it with 'systemctl --user start blauthd.socket', or run "
                         "'blauth-helper token' once: it starts one")


@dataclass(frozen=True)
class Token:
    """A token the daemon served. repr() leaves the token itself out."""

    token: str = field(repr=False)
    workspace: str
    expiry: Optional[datetime]  # aware, UTC; None when the token does not expire (API keys)
    kind: str  # api_key, client_credentials or login
    source: str  # where the credential was found, e.g. daemon_env:BL_CLIENT_CREDENTIALS
    hint: str = ""  # something the user should know although the token is good

    def remaining(self, now=None):
        """Seconds of life left (None when the token does not expire)."""
        if self.expiry is None:
            return None
        return self.expiry.timestamp() - (_now() if now is None else now)

    def headers(self):
        """Blaxel's two request headers for this token."""
        h = {AUTHORIZATION_HEADER: "Bearer " + self.token}
        if self.workspace:
            h[WORKSPACE_HEADER] = self.workspace
        return h


# --- where the daemon listens -------------------------------------------------------------------

def _private_dir(path):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077 == 0


def socket_path(environ=None):
    """Where blauthd listens, by the rule of ipc.SocketPath: $BLAUTH_SOCKET; else
    $XDG_RUNTIME_DIR/blauth/blauthd.sock (when absolute); else /run/user/UID/blauth/blauthd.sock
    when that directory is the user's and private; else ${TMPDIR:-/tmp}/blauth-UID/blauthd.sock."""
    env = os.environ if environ is None else environ
    if env.get("BLAUTH_SOCKET"):
        return env["BLAUTH_SOCKET"]
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if (xdg == "~" or xdg.startswith("~/")) and env.get("HOME"):
        xdg = env["HOME"] + xdg[1:]
    if not os.path.isabs(xdg):
        xdg = ""  # a relative XDG_RUNTIME_DIR counts as unset
    if xdg:
        runtime = xdg
    elif sys.platform == "darwin":
        runtime = ""
    else:
        runtime = "/run/user/%d" % os.getuid()
    if runtime and (xdg or _private_dir(runtime)):
        return os.path.join(runtime, "blauth", "blauthd.sock")
    return os.path.join(env.get("TMPDIR") or "/tmp", "blauth-%d" % os.getuid(), "blauthd.sock")


# --- the wire format ----------------------------------------------------------------------------

def _valid_value(v):
    return not any(c in v for c in "\r\n\0")


def _valid_key(k):
    return 0 < len(k) <= 128 and all(" " < c < "\x7f" and c != "=" for c in k)


def _encode(fields):
    lines = []
    for k, v in fields:
        if not _valid_key(k) or not _valid_value(v):
            # Never quote the value: it may be a secret.
            raise ValueError("blauth: the value of %s holds CR, LF or NUL" % k)
        lines.append("%s=%s\n" % (k, v))
    data = ("".join(lines) + "\n").encode("utf-8", "surrogateescape")
    if len(data) > MAX_REQUEST:
        raise ValueError("blauth: the request is over %d bytes" % MAX_REQUEST)
    return data


def _request_fields(action, workspace, min_ttl, cwd, env):
    """The fields of a request that resolves a credential: the workspace, the caller's directory
    (for its .env) and its BL_* variables. Refuses (ValueError) what cannot be sent faithfully:
    sending less would make the daemon resolve another workspace's credential."""
    fields = [("version", PROTOCOL_VERSION), ("action", action)]
    if workspace:
        if not _valid_value(workspace):
            raise ValueError("blauth: the workspace name holds CR, LF or NUL")
        fields.append(("workspace", workspace))
    if cwd is None:
        cwd = os.getcwd()
    cwd = os.fspath(cwd)
    if not os.path.isabs(cwd):
        raise ValueError("blauth: the directory %r is relative; the daemon needs an absolute path" % cwd)
    if not _valid_value(cwd):
        raise ValueError("blauth: the directory %r holds a line break" % cwd)
    if len(cwd.encode("utf-8", "surrogateescape")) > MAX_DIR:
        raise ValueError("blauth: the directory path is over the %d bytes blauthd accepts" % MAX_DIR)
    fields.append(("cwd", cwd))
    environ = os.environ if env is None else env
    for k in sorted(environ):
        if not k.startswith("BL_"):
            continue
        v = environ[k]
        if not _valid_key("env." + k):
            raise ValueError("blauth: the variable name %r cannot be sent" % k)
        if not _valid_value(v):
            # The name only: the value may be a secret.
            raise ValueError("blauth: %s holds CR, LF or NUL; set it again without it, or unset it" % k)
        fields.append(("env." + k, v))
    if min_ttl is not None:
        if min_ttl < 0:
            raise ValueError("blauth: min_ttl is %r; it must not be negative" % (min_ttl,))
        fields.append(("min_ttl", str(int(math.ceil(min_ttl)))))
    return fields


class _StreamEnded(Exception):
    pass


class _Conn:
    """One connection to the daemon. read_message may run in one thread while close runs in
    another: close shuts the socket down, which ends a blocked read."""

    def __init__(self, path, timeout):
        self.path = path
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(min(DIAL_TIMEOUT, timeout) if timeout else DIAL_TIMEOUT)
            self._sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
            self._sock.close()
            raise DaemonUnreachable(path, e.strerror or e) from None
        except socket.timeout:
            self._sock.close()
            raise BlauthError("timeout", "blauthd did not accept a connection on %s in time" % path) from None
        except OSError:
            self._sock.close()
            raise

    def send(self, data, timeout):
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(data)
        except socket.timeout:
            raise BlauthError("timeout", "blauthd did not take the request within %gs" % timeout) from None

    def read_message(self, timeout):
        """The next message as a dict (the first value of each key counts). timeout None waits
        as long as it takes. Raises _StreamEnded when the daemon closed the connection."""
        self._sock.settimeout(timeout)
        while True:
            if self._buf.startswith(b"\n"):
                raw, self._buf = b"", self._buf[1:]
                break
            i = self._buf.find(b"\n\n")
            if i >= 0:
                raw, self._buf = self._buf[:i + 1], self._buf[i + 2:]
                break
            if len(self._buf) > MAX_ANSWER:
                raise BlauthError("bad_answer", "an answer from blauthd is over %d bytes" % MAX_ANSWER)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                raise BlauthError("timeout", "blauthd did not answer within %gs" % timeout) from None
            except OSError as e:
                raise _StreamEnded(str(e)) from None
            if not chunk:
                raise _StreamEnded("blauthd closed the connection")
            self._buf += chunk
        answer = {}
        for line in raw.decode("utf-8", "replace").split("\n"):
            if not line:
                continue
            k, sep, v = line.partition("=")
            if not sep or len(line) > MAX_LINE or "\r" in v or "\0" in v:
                raise BlauthError("bad_answer", "malformed answer from blauthd")
            answer.setdefault(k, v)
        return answer

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def _error_of(answer):
    """The BlauthError an answer carries, or None for a success."""
    if answer.get("status") == "ok":
        return None
    return BlauthError(answer.get("code") or "internal", answer.get("message", ""), answer.get("hint", ""))


def _parse_token(answer):
    tok = answer.get("token", "")
    if not tok:
        raise BlauthError("bad_answer", "the answer holds no token")
    exp = answer.get("expiry", "0") or "0"
    try:
        n = int(exp)
    except ValueError:
        raise BlauthError("bad_answer", "the answer's expiry is not a number") from None
    expiry = None if n == 0 else datetime.fromtimestamp(n, tz=timezone.utc)
    return Token(token=tok, workspace=answer.get("workspace", ""), expiry=expiry,
                 kind=answer.get("kind", ""), source=answer.get("source", ""), hint=answer.get("hint", ""))


# The wall clock, in Unix seconds: tests move it.
_now = time.time


def _stale_error(tok, floor, now=None):
    """The error for tok when it has less than floor seconds left, else None."""
    left = tok.remaining(now)
    if left is None or left >= floor:
        return None
    return BlauthError("unavailable",
                       "the token for workspace %s has %ds of life left, under the %ds asked for"
                       % (tok.workspace, max(left, 0), floor),
                       "check that blauthd runs and can reach the token endpoint ('blauth-helper status')")


# --- one token ----------------------------------------------------------------------------------

def token(workspace=None, min_ttl=None, socket=None, cwd=None, env=None, timeout=DEFAULT_TIMEOUT):
    """Ask blauthd for one token with at least min_ttl seconds of life left (DEFAULT_MIN_TTL when
    None), resolved for this caller: its BL_* variables (env, os.environ by default) and the
    .env of its directory (cwd, the working directory by default). Returns a Token.

    Raises BlauthError (DaemonUnreachable when no daemon answers), or ValueError for what cannot
    be sent (a line break in the workspace name or in a BL_* variable)."""
    fields = _request_fields("get", workspace, min_ttl, cwd, env)
    data = _encode(fields)
    conn = _Conn(socket or socket_path(), timeout)
    try:
        conn.send(data, timeout)
        answer = conn.read_message(timeout)
        if answer.get("code") == "unsupported_version":
            # A daemon of protocol version 1, not restarted since an upgrade: get is the same.
            conn.send(_encode([("version", "1")] + fields[1:]), timeout)
            answer = conn.read_message(timeout)
    except _StreamEnded as e:
        raise BlauthError("bad_answer", "blauthd closed the connection before answering (%s)" % e) from None
    finally:
        conn.close()
    err = _error_of(answer)
    if err is not None:
        raise err
    tok = _parse_token(answer)
    stale = _stale_error(tok, DEFAULT_MIN_TTL if min_ttl is None else min_ttl)
    if stale is not None:
        raise stale
    return tok


# --- a watch ------------------------------------------------------------------------------------

class Watch:
    """A watch on blauthd: iterating yields a Token now and at every change the daemon announces
    (a refresh, a source change, a logout being an error), without asking for one.

    next() raises BlauthError for an error answer of the daemon (no_credentials after a logout,
    auth_failed, unavailable, ...); the watch goes on: iterate again to wait for the next token.
    When no daemon answers at the first connection it raises DaemonUnreachable. Once connected,
    a stream that ends (a daemon restart, a 'blauth-helper stop') is reconnected on its own,
    250 ms then doubling to 4 s; it never starts a daemon, it waits for one (socket activation
    or the user's next blauth-helper command). After close() iteration stops.

    close() may be called from another thread (it wakes a blocked next()); iterate from one
    thread at a time."""

    def __init__(self, workspace=None, min_ttl=None, socket=None, cwd=None, env=None, timeout=DEFAULT_TIMEOUT):
        self._data = _encode(_request_fields("watch", workspace, min_ttl, cwd, env))
        self._path = socket or socket_path()
        self._timeout = timeout
        self._floor = DEFAULT_MIN_TTL if min_ttl is None else min_ttl
        self._workspace = workspace or ""
        self._lock = threading.Lock()
        self._conn = None
        self._closed = threading.Event()
        self._connected_once = False
        self._delay = 0.0
        self._current = None
        self.down = None  # why the stream is down now (a BlauthError or OSError), None while up

    def __iter__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _connect(self):
        conn = _Conn(self._path, self._timeout)
        try:
            conn.send(self._data, self._timeout)
            with self._lock:
                if self._closed.is_set():
                    raise _StreamEnded("closed")
                self._conn = conn
            return conn.read_message(self._timeout)
        except BaseException:
            self._drop(conn)
            raise

    def _drop(self, conn):
        with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def __next__(self):
        while True:
            if self._closed.is_set():
                raise StopIteration
            conn = self._conn
            try:
                if conn is None:
                    if self._connected_once:
                        self._delay = min(max(2 * self._delay, RECONNECT_FIRST), RECONNECT_MAX)
                        if self._closed.wait(self._delay):
                            raise StopIteration
                    answer = self._connect()
                else:
                    answer = conn.read_message(None)
            except _StreamEnded as e:
                if conn is not None:
                    self._drop(conn)
                if self._closed.is_set():
                    raise StopIteration from None
                self.down = BlauthError("unreachable", "the watch stream ended: %s" % e)
                self._connected_once = True
                continue
            except (BlauthError, OSError) as e:
                if conn is not None:
                    self._drop(conn)
                if self._closed.is_set():
                    raise StopIteration from None
                if not self._connected_once:
                    raise
                self.down = e
                continue
            err = _error_of(answer)
            if err is not None and err.code in ("shutting_down", "busy"):
                # About the connection, not the token: the last token stays good.
                if self._conn is not None:
                    self._drop(self._conn)
                self.down = err
                self._connected_once = True
                continue
            self._connected_once, self._delay, self.down = True, 0.0, None
            if err is not None:
                self._current = None
                raise err
            tok = _parse_token(answer)
            self._current = tok
            return tok

    def current(self):
        """The latest token if it still has min_ttl of life left, else None."""
        tok = self._current
        if tok is None or _stale_error(tok, self._floor) is not None:
            return None
        return tok

    @property
    def connected(self):
        return self._conn is not None and self.down is None

    def close(self):
        """End the watch; a next() blocked in another thread returns (StopIteration)."""
        self._closed.set()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def watch(workspace=None, min_ttl=None, socket=None, cwd=None, env=None, timeout=DEFAULT_TIMEOUT):
    """A Watch: iterate it for a Token now and at every change. See Watch."""
    return Watch(workspace=workspace, min_ttl=min_ttl, socket=socket, cwd=cwd, env=env, timeout=timeout)


class Watcher:
    """A Watch followed by a background thread, which keeps the daemon's latest token: token()
    answers from memory, for any number of threads. The constructor waits for the daemon's first
    answer and raises it when it is an error (or DaemonUnreachable), so a misconfigured program
    stops at start. Use it as a context manager, or call close()."""

    def __init__(self, workspace=None, min_ttl=None, socket=None, cwd=None, env=None,
                 timeout=DEFAULT_TIMEOUT, wait=DEFAULT_WAIT):
        self._watch = Watch(workspace=workspace, min_ttl=min_ttl, socket=socket, cwd=cwd, env=env, timeout=timeout)
        self._floor = self._watch._floor
        self._wait = wait
        self._cond = threading.Condition()
        self._error = None
        try:
            self._token = next(self._watch)
        except BaseException:
            self._watch.close()
            raise
        self._thread = threading.Thread(target=self._run, name="blauth-watch", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            try:
                tok = next(self._watch)
            except StopIteration:
                break
            except BlauthError as e:
                with self._cond:
                    self._token, self._error = None, e
                    self._cond.notify_all()
                continue
            with self._cond:
                self._token, self._error = tok, None
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def token(self, wait=None):
        """The daemon's latest token. Never one with less than min_ttl of life left: when the
        latest is that old (the daemon is away, or the clock jumped), wait up to `wait` seconds
        (the constructor's, DEFAULT_WAIT by default) for a newer one, then raise BlauthError
        "unavailable". When the daemon's latest answer is an error, raise it at once."""
        wait = self._wait if wait is None else wait
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                if self._watch._closed.is_set():
                    raise BlauthError("closed", "the watcher is closed")
                if self._error is not None:
                    e = self._error
                    raise BlauthError(e.code, e.message, e.hint)
                stale = _stale_error(self._token, self._floor)
                if stale is None:
                    return self._token
                left = deadline - time.monotonic()
                if left <= 0:
                    down = self._watch.down
                    msg = stale.message + "; blauthd sent no newer one within %gs" % wait
                    if down is not None:
                        msg += " (%s)" % down
                    raise BlauthError(stale.code, msg, stale.hint)
                self._cond.wait(left)

    def headers(self, wait=None):
        """Blaxel's two request headers from token()."""
        return self.token(wait).headers()

    @property
    def workspace(self):
        """The workspace of the latest token (or the one asked for while the latest answer is an
        error)."""
        tok = self._token
        return tok.workspace if tok is not None else self._watch._workspace

    @property
    def connected(self):
        return self._watch.connected

    def close(self):
        """Stop the thread and close the connection. Idempotent."""
        self._watch.close()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- urllib -------------------------------------------------------------------------------------

class BlauthAuth(urllib.request.BaseHandler):
    """A urllib handler that sets X-Blaxel-Authorization and X-Blaxel-Workspace on every request
    of its opener, from a Watcher's latest token:

        opener = urllib.request.build_opener(blauth.BlauthAuth(watcher))

    Without a watcher it starts its own (options as for Watcher; close() stops it). hosts, when
    given, limits the headers to requests for those host names (a redirect elsewhere gets none);
    otherwise give this opener only Blaxel URLs."""

    def __init__(self, watcher=None, hosts=None, **options):
        self._own = watcher is None
        self.watcher = Watcher(**options) if watcher is None else watcher
        self._hosts = None if hosts is None else frozenset(h.lower() for h in hosts)

    def http_request(self, req):
        if self._hosts is not None:
            host = urllib.parse.urlsplit(req.full_url).hostname or ""
            if host.lower() not in self._hosts:
                return req
        for k, v in self.watcher.headers().items():
            req.add_unredirected_header(k, v)
        return req

    https_request = http_request

    def close(self):
        if self._own:
            self.watcher.close()


BlauthHandler = BlauthAuth


def headers(watcher=None, **options):
    """Blaxel's two request headers: from watcher's latest token when given, else from a
    one-shot token(**options)."""
    tok = watcher.token() if watcher is not None else token(**options)
    return tok.headers()


# --- the Blaxel Python SDK ----------------------------------------------------------------------

def blaxel_auth(watcher=None, base_url="", **options):
    """An auth object for the Blaxel Python SDK (package blaxel), made from its own extension
    point, blaxel.core.authentication.BlaxelAuth (an httpx.Auth): every request it signs gets the
    daemon's latest token. Install it in place of the SDK's own:

        import blaxel
        from blaxel.core import settings
        from blaxel.core.client import client
        auth = blauth.blaxel_auth(workspace="acme")
        settings.auth = auth       # settings.headers, settings.workspace, model helpers
        client.with_auth(auth)     # the control-plane API client (httpx)

    Without a watcher it starts its own (options as for Watcher). Raises ImportError when the SDK
    is not installed. The SDK itself was not available where this was tested: the adapter is
    written against its published BlaxelAuth interface (get_headers, auth_flow, token,
    workspace_name) and tested against a stand-in of it."""
    try:
        from blaxel.core.authentication import BlaxelAuth
    except ImportError as e:
        raise ImportError("blauth.blaxel_auth needs the Blaxel Python SDK (package blaxel): %s" % e) from e
    cls = _blaxel_auth_class(BlaxelAuth)
    return cls(Watcher(**options) if watcher is None else watcher, base_url)


_blaxel_classes = {}


def _blaxel_auth_class(base):
    """The adapter class on top of the SDK's BlaxelAuth class base (one per base)."""
    if base in _blaxel_classes:
        return _blaxel_classes[base]

    class BlauthBlaxelAuth(base):
        """The Blaxel SDK's auth, backed by blauthd's watch."""

        requires_request_body = False
        requires_response_body = False

        def __init__(self, watcher, base_url=""):
            # Not BlaxelAuth.__init__: it stores secrets (CredentialsType) this adapter never
            # holds. These are the attributes the SDK reads.
            self.watcher = watcher
            self.base_url = base_url
            self.credentials = None

        @property
        def workspace_name(self):
            return self.watcher.workspace

        @property
        def token(self):
            return self.watcher.token().token

        def get_headers(self):
            return self.watcher.headers()

        def auth_flow(self, request):
            request.headers.update(self.watcher.headers())
            yield request

        async def async_auth_flow(self, request):
            # The latest token comes from memory; only when it is too old does token() wait for
            # the next one, and then in a worker thread, not on the event loop.
            try:
                h = self.watcher.headers(wait=0)
            except BlauthError as e:
                if e.code != "unavailable":
                    raise
                import asyncio
                h = await asyncio.get_running_loop().run_in_executor(None, self.watcher.headers)
            request.headers.update(h)
            yield request

        def __repr__(self):
            return "BlauthBlaxelAuth(workspace=%r)" % self.workspace_name

    _blaxel_classes[base] = BlauthBlaxelAuth
    return BlauthBlaxelAuth

