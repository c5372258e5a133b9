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
"""

from __future__ import annotations

import base64
import http.client
import logging
import select
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import orjson

log = logging.getLogger("hive.client")


@dataclass
class Task:
    id: Any  # echoed back with its JSON type unchanged
    task_type: str
    params: Any
    raw: dict


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

    def __str__(self) -> str:
        return self.message


NO_TASKS = "no_tasks"


def snippet(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text + ("..." if len(body) > limit else ""))


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
                 get_timeout: float = 20.0, submit_timeout: float = 60.0) -> None:
        self.base = server_url.rstrip("/")
        self.get_timeout = get_timeout
        self.submit_timeout = submit_timeout
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
            self.path_prefix = self.base  # through a proxy, plain HTTP requests carry the absolute URL
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

    def _request(self, method: str, endpoint: str, timeout: float, data: bytes | None = None) -> bytes:
        """The body of a 2xx answer; anything else raises ServerError."""
        headers = self.headers
        if data is not None:
            headers = dict(headers, **{"Content-Type": "application/json"})
        try:
            conn = self._connection(timeout)
            conn.request(method, f"{self.path_prefix}/{endpoint}", body=data, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except TimeoutError:
            self.close()
            raise ServerError(f"{endpoint}: no answer within {timeout:g} s") from None
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
        raw = self._request("GET", "get_task", self.get_timeout)
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
        task_type = body.get("task_type")
        if not isinstance(task_type, str) or not task_type:
            raise MalformedTask(f"get_task: task {body['id']!r} has no task_type: {snippet(raw)}",
                                task_id=body["id"], has_id=True)
        return Task(id=body["id"], task_type=task_type, params=body.get("params", {}), raw=body)

    def submit(self, body: bytes) -> None:
        """POST one result body (already JSON). Raises ServerError."""
        self._request("POST", "submit_result", self.submit_timeout, data=body)


def _describe(exc: BaseException) -> str:
    """One line for a failed exchange, e.g. "ConnectionRefusedError: [Errno 111] Connection refused"."""
    text = " ".join(str(exc).split()) or "connection closed without an answer"
    return f"{type(exc).__name__}: {text[:200]}"


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


class _HTTP(http.client.HTTPConnection):
    # Nagle off: a request goes out as headers then body in two writes, and with Nagle on
    # the body would wait for the server's delayed ACK (~40 ms on Linux).
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPS(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def result_body(task_id: Any, worker_id: str, ok: bool, raw_result: bytes) -> bytes:
    """The submit_result body exactly as the 1.0.x worker posts it; raw_result is JSON bytes."""
    return orjson.dumps({
        "task_id": task_id,
        "worker_id": worker_id,
        "status": "success" if ok else "failure",
        "result": orjson.Fragment(raw_result),
    })
