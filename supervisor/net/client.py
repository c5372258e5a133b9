"""Hive protocol v1 on the wire (see ../shared/hive-protocol-v1.md): get_task and submit_result.

Only this module speaks HTTP. Every answer is classified here into a small set of
outcomes, so the claim and submit loops never see a raw response.

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
byte a second is cut), and the task's id and params may not nest deeper than
MAX_NESTING.
"""

from __future__ import annotations

import base64
import http.client
import io
import logging
import select
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from itertools import chain, compress
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import orjson

from executor.protocol import FailureKind
from supervisor.model import Task
from supervisor.safetext import loggable, redact_url

log = logging.getLogger("hive.client")

# submit_result's answer is never used; it is read (for keep-alive and an error's text) up to this.
SUBMIT_ANSWER_MAX_BYTES = 64 * 1024
# Containers inside a task's id or params: far beyond any real task, far below what orjson
# (254 on dumps) and the executor pipe can take.
MAX_NESTING = 64
READ_CHUNK = 64 * 1024
DEADLINE_SLACK = 0.25  # seconds an exchange may overrun its deadline by (see _DeadlineReader)
# The settings that bound each endpoint's exchange, named in its errors: (time, size).
_LIMIT_NAMES = {"get_task": ("GET_TASK_TIMEOUT", "GET_TASK_MAX_BYTES"),
                "submit_result": ("SUBMIT_TIMEOUT", "the submit_result answer cap")}


@dataclass
class ServerError(Exception):
    """The server could not be used this time; ``retry_after`` in seconds when it said so."""

    message: str
    retry_after: float | None = None
    permanent: bool = False  # a 4xx that retrying will not fix

    def __str__(self) -> str:
        return self.message


@dataclass
class MalformedTask(Exception):
    """A task answer we cannot run; has an id when the server gave one (then we fail it back)."""

    message: str
    task_id: Any = None
    has_id: bool = False
    task_type: str = ""
    kind: FailureKind = FailureKind.UNKNOWN_TASK  # the failure kind it is answered with

    def __str__(self) -> str:
        return self.message


NO_TASKS = "no_tasks"


def snippet(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text + ("..." if len(body) > limit else ""))


_IS_DICT = {dict}.__contains__
_IS_LIST = {list}.__contains__
_IS_CONTAINER = {dict, list}.__contains__


def too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """True if lists and objects nest more than ``limit`` levels in ``value``. Level by level and
    iterative (a recursive walk is exactly what a deeply nested answer would break), with the
    per-item work in map/compress/chain: 8x faster than a Python loop over the items, which cost
    300 us on a 300-product prom_pars task here."""
    if not _IS_CONTAINER(type(value)):
        return False  # the usual id: a number or a string
    level = [value]
    for _ in range(limit + 1):
        level = list(compress(level, map(_IS_CONTAINER, map(type, level))))
        if not level:
            return False
        types = list(map(type, level))
        level = list(chain(chain.from_iterable(map(dict.values, compress(level, map(_IS_DICT, types)))),
                           chain.from_iterable(compress(level, map(_IS_LIST, types)))))
    return True


class AnswerTooLarge(Exception):
    pass


class _DeadlineSocket:
    """Stands in for the socket when http.client makes the answer's file: every read waits at
    most until the exchange's deadline, so the deadline bounds the whole answer, not each read."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self.sock, self.deadline))


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        # settimeout is a syscall: only when the socket's timeout would overshoot the deadline by
        # more than DEADLINE_SLACK (an answer read within milliseconds never pays for it).
        current = self.sock.gettimeout()
        if current is None or current > left + DEADLINE_SLACK:
            self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


def read_capped(resp: http.client.HTTPResponse, cap: int, setting: str) -> bytes:
    """The body of ``resp``, or AnswerTooLarge as soon as it is known to pass ``cap`` bytes."""
    if resp.length is not None:  # announced: refused before a byte is allocated
        if resp.length > cap:
            raise AnswerTooLarge(f"answer of {resp.length} bytes announced, over {setting}={cap}")
        return resp.read()
    parts, total = [], 0
    while chunk := resp.read(READ_CHUNK):  # chunked, or until the server closes
        total += len(chunk)
        if total > cap:
            raise AnswerTooLarge(f"answer passed {setting}={cap} bytes while being read")
        parts.append(chunk)
    return b"".join(parts)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


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
        if hasattr(select, "poll"):
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
        self.path_prefix = self.target.path
        if self.proxy is not None and self.target.scheme == "http":
            # Through a proxy, plain HTTP requests carry the absolute URL (never its credentials).
            self.path_prefix = redact_url(self.base).replace("***@", "", 1)
            self.headers.update(_proxy_auth(self.proxy))
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = self.conn
        if conn is not None and (conn.sock is None or _dropped(conn.sock)):
            conn.close()  # closed by the server while idle: never reuse it
            conn = None
        if conn is None:
            conn = self.conn = self._connect(timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
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

    def _request(self, method: str, endpoint: str, timeout: float, cap: int, data: bytes | None = None) -> bytes:
        """The body of a 2xx answer; anything else raises ServerError. ``timeout`` bounds the
        whole exchange, ``cap`` the answer's size."""
        headers = self.headers
        if data is not None:
            headers = dict(headers, **{"Content-Type": "application/json"})
        deadline = time.monotonic() + timeout
        try:
            conn = self._connection(timeout)
            conn.deadline = deadline  # before connecting: a proxy's CONNECT answer is read within it too
            if conn.sock is None:
                conn.connect()  # here, not inside request(): what is left of the deadline is known after it
                conn.sock.settimeout(max(0.001, deadline - time.monotonic()))  # sending, too, within it
            conn.request(method, f"{self.path_prefix}/{endpoint}", body=data, headers=headers)
            resp = conn.getresponse()
            body = read_capped(resp, cap, _LIMIT_NAMES[endpoint][1])
        except TimeoutError:
            self.close()
            raise ServerError(f"{endpoint}: no answer within {timeout:g} s "
                              f"({_LIMIT_NAMES[endpoint][0]} bounds the whole exchange)") from None
        except AnswerTooLarge as exc:
            self.close()  # the rest is never read: this connection cannot carry another request
            raise ServerError(f"{endpoint}: {exc}; dropped") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ServerError(f"{endpoint}: {_describe(exc)}") from None
        if resp.will_close:
            self.close()
        status = resp.status
        if 300 <= status < 400:
            raise ServerError(f"{endpoint}: HTTP {status} redirect to {resp.headers.get('Location')!r} "
                              "(redirects are not followed: put the final address in SERVER_URL)")
        if not 200 <= status < 300:
            permanent = 400 <= status < 500 and status not in (408, 429)
            raise ServerError(f"{endpoint}: HTTP {status} {snippet(body)}",
                              retry_after=_retry_after(resp.headers.get("Retry-After")), permanent=permanent)
        return body

    def get_task(self) -> Task | str:
        """A Task, or NO_TASKS. Raises ServerError or MalformedTask."""
        raw = self._request("GET", "get_task", self.get_timeout, self.get_max_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ServerError(f"get_task: answer is not JSON: {snippet(raw)}") from None
        if not isinstance(body, dict):
            raise ServerError(f"get_task: answer is not a JSON object: {snippet(raw)}")
        if body.get("status") == NO_TASKS and "id" not in body:
            return NO_TASKS
        if "id" not in body or body["id"] is None:
            raise MalformedTask(f"get_task: task without an id: {snippet(raw)}")
        task_id = body["id"]
        if too_deep(task_id):
            # It could not be echoed back (nor journalled): skipped; the server's requeue owns it.
            raise MalformedTask(f"get_task: task id nested deeper than {MAX_NESTING} levels, cannot answer it: "
                                f"{snippet(raw)}")
        task_type = body.get("task_type")
        if not isinstance(task_type, str) or not task_type:
            raise MalformedTask(f"get_task: task {task_id!r} has no task_type: {snippet(raw)}",
                                task_id=task_id, has_id=True)
        params = body.get("params", {})
        if too_deep(params):
            raise MalformedTask(f"params nested deeper than {MAX_NESTING} levels", task_id=task_id, has_id=True,
                                task_type=task_type, kind=FailureKind.BAD_PARAMS)
        return Task(id=task_id, task_type=task_type, params=params)

    def submit(self, body: bytes) -> None:
        """POST one result body (already JSON). Raises ServerError."""
        self._request("POST", "submit_result", self.submit_timeout, SUBMIT_ANSWER_MAX_BYTES, data=body)


def _describe(exc: BaseException) -> str:
    """One line for a failed exchange, e.g. "ConnectionRefusedError: [Errno 111] Connection refused"."""
    text = " ".join(str(exc).split()) or "connection closed without an answer"
    return f"{type(exc).__name__}: {loggable(text, 200)}"


def _proxy_auth(proxy: SplitResult) -> dict[str, str]:
    if not proxy.username:
        return {}
    creds = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(creds).decode("ascii")}


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


class _HTTP(_Deadline, http.client.HTTPConnection):
    # Nagle off: a request goes out as headers then body in two writes, and with Nagle on
    # the body would wait for the server's delayed ACK (~40 ms on Linux).
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPS(_Deadline, http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


