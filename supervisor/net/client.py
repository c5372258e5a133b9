"""Hive protocol v1 on the wire (see ../shared/hive-protocol-v1.md): get_task and submit_result.

Only this module speaks HTTP. What each answer means is decided in answers.py (no socket
there), so the claim and submit loops never see a raw response.

It speaks HTTP/1.1 keep-alive through the standard library's http.client, not
requests: against a loopback server a requests.Session cost 3.2 ms of client CPU
per GET+POST pair and http.client 0.55 ms (bench/run.py, part 2), and the claim
and submit threads share one GIL with the supervision loop. What requests gave us
is kept: proxies from the environment (read once), certificate checks against the
system store plus certifi's bundle, and the same reuse rule for a keep-alive
connection (a connection the server closed while idle is replaced before a
request goes out; a request that fails is never sent twice). Redirects are not
followed: a 3xx answer is an error naming the address to put in SERVER_URL.

Every answer is hostile until parsed: its size is capped (on the announced
Content-Length before anything is allocated, and while reading, chunked or not), the
whole exchange has one deadline (checked on every read, so an answer trickling a
byte a second is cut); answers.py then bounds how deep the task's id and params nest.
"""

from __future__ import annotations

import base64
import http.client
import io
import logging
import select
import socket
import ssl
import sys
import time
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from common.safetext import loggable
from supervisor.host import clock
from supervisor.model import Task
from supervisor.net.answers import (  # noqa: F401 - re-exported: callers catch these from the client
    HEAD_BYTES,
    MAX_NESTING,
    NO_TASKS,
    MalformedTask,
    ServerError,
    classify_submit,
    classify_task,
    classify_too_large,
    too_deep,
)

log = logging.getLogger("hive.client")

# submit_result's answer is never used; it is read (for keep-alive and an error's text) up to this.
SUBMIT_ANSWER_MAX_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
DEADLINE_SLACK = 0.25  # seconds an exchange may overrun its deadline by (see _DeadlineReader)
# get_task is not idempotent (the server hands the task out when it reads the request, and v1 has
# no lease), so it goes out on a fresh connection, or on one whose last answer ended less than
# this long ago and that shows no close. Servers close idle keep-alive connections from 2 s on
# (gunicorn's default keepalive; uvicorn, Apache and Node at 5 s, nginx 75 s); within a second of
# an answer (a drain's back-to-back claims) the connection is as good as a new one, after it a new
# one costs one TCP handshake per poll. submit_result may be sent twice and reuses any open one.
GET_REUSE_IDLE = 1.0
# The settings that bound each endpoint's exchange, named in its errors: (time, size).
_LIMIT_NAMES = {"get_task": ("GET_TASK_TIMEOUT", "GET_TASK_MAX_BYTES"),
                "submit_result": ("SUBMIT_TIMEOUT", "the submit_result answer cap")}


class AnswerTooLarge(Exception):
    def __init__(self, message: str, head: bytes = b"") -> None:
        super().__init__(message)
        self.head = head  # the answer's first bytes, up to the ``keep_head`` read_capped was given


class _DeadlineSocket:
    """Stands in for the socket when http.client makes the answer's file: every read waits at
    most until the exchange's deadline, so the deadline bounds the whole answer, not each read."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        # The socket's own file object, not a reader over the bare socket: it holds a reference
        # that keeps the descriptor open until the answer is read. http.client closes the
        # connection as soon as an answer says it will close (HTTP/1.0, "Connection: close"),
        # before its body is read; a bare reader then read a closed descriptor (EBADF), or one
        # the other thread's new connection had just been given.
        return io.BufferedReader(_DeadlineReader(self.sock, self.sock.makefile("rb", buffering=0),
                                                 self.deadline))


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, raw: io.RawIOBase, deadline: float) -> None:
        self.sock = sock
        self.raw = raw
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        # settimeout is a syscall: only when the socket's timeout would overshoot the deadline by
        # more than DEADLINE_SLACK (an answer read within milliseconds never pays for it).
        current = self.sock.gettimeout()
        if current is None or current > left + DEADLINE_SLACK:
            self.sock.settimeout(left)
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()  # gives back the reference: the descriptor closes once nothing holds it
        super().close()


def read_capped(resp: http.client.HTTPResponse, cap: int, setting: str, keep_head: int = 0) -> bytes:
    """The body of ``resp``, or AnswerTooLarge as soon as it is known to pass ``cap`` bytes,
    carrying the body's first ``keep_head`` bytes (at most: what had arrived)."""
    if resp.length is not None:  # announced: refused before more than keep_head is allocated
        if resp.length > cap:
            raise AnswerTooLarge(f"answer of {resp.length} bytes announced, over {setting}={cap}",
                                 _first_bytes(resp, keep_head) if keep_head else b"")
        return resp.read()
    parts: list[bytes] = []
    total = 0
    while chunk := resp.read(READ_CHUNK):  # chunked, or until the server closes
        total += len(chunk)
        if total > cap:
            raise AnswerTooLarge(f"answer passed {setting}={cap} bytes while being read",
                                 b"".join(parts)[:keep_head])
        parts.append(chunk)
    return b"".join(parts)


def _first_bytes(resp: http.client.HTTPResponse, n: int) -> bytes:
    """Up to ``n`` bytes of the body that have arrived or arrive with the next read, never more
    waiting than that one read (an answer that announces 100 GB may then trickle)."""
    try:
        return resp.read1(n)
    except (OSError, http.client.HTTPException):
        return b""


def environ_proxy(url: str) -> SplitResult | None:
    """The proxy the environment (or, on Windows, the registry) names for ``url``, or None."""
    import urllib.request  # only here: what it costs to import is paid once, at start

    target = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(target.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(target.hostname or ""):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    parts = urlsplit(proxy)
    if parts.scheme != "http":
        log.warning("proxy %s: only http:// proxies are supported; using it as one", parts.hostname)
    return parts


def _dropped(sock: socket.socket) -> bool:
    """True if an idle keep-alive connection has been closed by the server (readable = EOF or junk)."""
    try:
        if sys.platform != "win32":  # poll() everywhere but Windows (sys.platform: mypy's win32 pass reads it)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class HiveClient:
    """One keep-alive connection to the Hive server. Not thread-safe: one per thread."""

    def __init__(self, server_url: str, worker_id: str, version: str,
                 get_timeout: float = 20.0, submit_timeout: float = 60.0,
                 get_max_bytes: int = 16 * 1024 * 1024) -> None:
        self.base = server_url.rstrip("/")
        self.get_timeout = get_timeout
        self.submit_timeout = submit_timeout
        self.get_max_bytes = get_max_bytes
        self.target = urlsplit(self.base)
        self.proxy = environ_proxy(self.base)
        self.headers = {
            "X-Worker-ID": worker_id,
            "X-Worker-Version": version,
            "User-Agent": f"hive-worker/{version}",
            "Accept": "*/*",
        }
        if self.target.username is not None:
            # user:password in SERVER_URL is Basic authentication, as 1.0.x's requests sent it. It
            # goes to the server only: redirects are never followed, a plain-HTTP proxy forwards the
            # request as it is, and through an HTTPS proxy it travels inside the TLS tunnel.
            self.headers["Authorization"] = _basic_auth(self.target.username, self.target.password)
        self.path_prefix = self.target.path
        if self.proxy is not None and self.target.scheme == "http":
            # Through a proxy, plain HTTP requests carry the absolute URL (never its credentials).
            host = self.target.netloc.rpartition("@")[2]
            self.path_prefix = f"{self.target.scheme}://{host}{self.target.path}"
            self.headers.update(_proxy_auth(self.proxy))
        self.conn: _Connection | None = None
        self.answered_at = 0.0  # monotonic end of the last answer on self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connection(self, timeout: float, max_idle: float | None) -> tuple[_Connection, bool]:
        """A connection for the next request and whether it is a reused one. An idle one is
        reused only if it shows no close (urllib3's check) and, when ``max_idle`` is given, its
        last answer ended less than ``max_idle`` seconds ago."""
        conn = self.conn
        if conn is not None and (conn.sock is None or _dropped(conn.sock) or (
                max_idle is not None and time.monotonic() - self.answered_at > max_idle)):
            conn.close()
            conn = self.conn = None
        reused = conn is not None
        if conn is None:
            conn = self.conn = self._connect(timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, reused

    def _connect(self, timeout: float) -> _Connection:
        host, port = self.target.hostname or "", self.target.port
        via = self.proxy
        if self.target.scheme == "https":
            ctx = _tls_context()
            if via is None:
                return _HTTPS(host, port, timeout=timeout, context=ctx)
            conn = _HTTPS(via.hostname or "", via.port or 8080, timeout=timeout, context=ctx)
            conn.set_tunnel(host, port, headers=_proxy_auth(via))
            return conn
        if via is not None:
            return _HTTP(via.hostname or "", via.port or 8080, timeout=timeout)
        return _HTTP(host, port, timeout=timeout)

    def _exchange(self, method: str, endpoint: str, timeout: float, cap: int,
                  data: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        """Status, headers and body of one answer, whatever its status; a failed exchange raises
        ServerError. ``timeout`` bounds the whole exchange, ``cap`` the answer's size."""
        headers = self.headers
        if data is not None:
            headers = dict(headers, **{"Content-Type": "application/json"})
        deadline = time.monotonic() + timeout
        max_idle = GET_REUSE_IDLE if endpoint == "get_task" else None
        try:
            conn, reused = self._connection(timeout, max_idle)
            try:
                resp = self._send(conn, deadline, method, endpoint, headers, data)
            except ConnectionError as exc:
                if not reused:
                    raise
                # A reused connection that broke before a byte of the answer came back: the server
                # closed it while idle, as our request went out, and so never read the request
                # (a server that read it and then died would have lost the task either way).
                # Sent once more on a fresh connection, get_task too: nothing can be lost twice.
                log.debug("%s: the kept-alive connection was closed by the server (%s); sending on a new one",
                          endpoint, type(exc).__name__)
                self.close()
                conn, _ = self._connection(timeout, max_idle)
                resp = self._send(conn, deadline, method, endpoint, headers, data)
            body = read_capped(resp, cap, _LIMIT_NAMES[endpoint][1], HEAD_BYTES if endpoint == "get_task" else 0)
        except TimeoutError:
            self.close()
            raise ServerError(f"{endpoint}: no answer within {timeout:g} s "
                              f"({_LIMIT_NAMES[endpoint][0]} bounds the whole exchange)") from None
        except AnswerTooLarge as exc:
            self.close()  # the rest is never read: this connection cannot carry another request
            if endpoint == "get_task":
                raise classify_too_large(str(exc), exc.head) from None
            raise ServerError(f"{endpoint}: {exc}; dropped") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ServerError(f"{endpoint}: {_describe(exc)}") from None
        if resp.will_close:
            self.close()
        self.answered_at = time.monotonic()
        clock.server_said(resp.headers.get("Date"))  # the PC's clock is not trusted blindly (supervisor/host/clock.py)
        return resp.status, resp.headers, body

    def _send(self, conn: _Connection, deadline: float, method: str, endpoint: str,
              headers: dict[str, str], data: bytes | None) -> http.client.HTTPResponse:
        """Send one request on ``conn`` and read the answer's head, all before ``deadline``."""
        conn.deadline = deadline  # before connecting: a proxy's CONNECT answer is read within it too
        fresh = conn.sock is None  # (a name, not the test itself: connect() sets conn.sock)
        if fresh:
            conn.connect()  # here, not inside request(): what is left of the deadline is known after it
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))  # sending, too, within it
        conn.request(method, f"{self.path_prefix}/{endpoint}", body=data, headers=headers)
        return conn.getresponse()

    def get_task(self) -> Task | Literal["no_tasks"]:
        """A Task, or NO_TASKS. Raises ServerError or MalformedTask."""
        outcome = classify_task(*self._exchange("GET", "get_task", self.get_timeout, self.get_max_bytes))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def submit(self, body: bytes) -> None:
        """POST one result body (already JSON). Raises ServerError."""
        error = classify_submit(*self._exchange("POST", "submit_result", self.submit_timeout,
                                                SUBMIT_ANSWER_MAX_BYTES, data=body))
        if error is not None:
            raise error


def _describe(exc: BaseException) -> str:
    """One line for a failed exchange, e.g. "ConnectionRefusedError: [Errno 111] Connection refused"."""
    text = " ".join(str(exc).split()) or "connection closed without an answer"
    return f"{type(exc).__name__}: {loggable(text, 200)}"


def _basic_auth(username: str, password: str | None) -> str:
    """The Basic credentials header value for a URL's (percent-encoded) user and password."""
    creds = f"{unquote(username)}:{unquote(password or '')}".encode()
    return "Basic " + base64.b64encode(creds).decode("ascii")


def _proxy_auth(proxy: SplitResult) -> dict[str, str]:
    if not proxy.username:
        return {}
    return {"Proxy-Authorization": _basic_auth(proxy.username, proxy.password)}


_TLS: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """The system's trusted certificates plus certifi's bundle (what requests checked against),
    so the frozen build verifies servers on machines without an OpenSSL certificate folder."""
    global _TLS
    if _TLS is None:
        ctx = ssl.create_default_context()
        try:
            import certifi

            ctx.load_verify_locations(certifi.where())
        except (ImportError, OSError):
            pass
        _TLS = ctx
    return _TLS


class _Deadline:
    """Mixin: the answer is read through a _DeadlineSocket (set ``deadline`` before each request)."""

    deadline = 0.0  # monotonic; a connection used without one times out at once, never waits forever

    def response_class(self, sock: socket.socket, *args: Any, **kwargs: Any) -> http.client.HTTPResponse:
        return http.client.HTTPResponse(_DeadlineSocket(sock, self.deadline), *args, **kwargs)  # type: ignore[arg-type]


# http.client calls self.response_class(sock, ...) as a factory; its stub says it is a class, which a
# method overriding it cannot be typed as, hence the two ignores.
class _HTTP(_Deadline, http.client.HTTPConnection):  # type: ignore[misc]
    # Nagle off: a request goes out as headers then body in two writes, and with Nagle on
    # the body would wait for the server's delayed ACK (~40 ms on Linux).
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPS(_Deadline, http.client.HTTPSConnection):  # type: ignore[misc]
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# Every connection the client makes: each reads its answer within a deadline (_Deadline).
_Connection = _HTTP | _HTTPS
