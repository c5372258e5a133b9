"""The HTTP side: protocol v1 endpoints, request recording and fault injection."""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .faults import Fault
from .records import Headers, RequestRecord

if TYPE_CHECKING:
    from .server import HiveDevServer
    from .store import Store

# Linux/macOS `struct linger` is two ints, Windows' is two u_shorts.
_LINGER_0 = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
_MAX_BODY = 64 * 1024 * 1024

Response = tuple[int, bytes, dict[str, str]]


class BadRequest(Exception):
    pass


def json_response(code: int, value: Any) -> Response:
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return code, body, {"Content-Type": "application/json"}


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so workers can keep one connection open; every answer carries Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "HiveDevServer/1"
    # An idle keep-alive connection gives its thread back after this long.
    timeout = 120

    @property
    def app(self) -> HiveDevServer:
        return self.server.app  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def do_PUT(self) -> None:  # noqa: N802
        self._serve()

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        if self.app.verbose:
            super().log_message(format, *args)

    def _serve(self) -> None:
        path = urlsplit(self.path).path
        try:
            body = self._read_body()
        except BadRequest as exc:
            self._record(path, b"")
            # The rest of the stream can't be trusted, so this connection ends here.
            code, payload, headers = json_response(400, {"status": "error", "error": str(exc)})
            self._send(code, payload, {**headers, "Connection": "close"})
            return
        self._record(path, body)

        fault = self.app.fault_for(self.command, path, body)
        if fault is not None and self.app.verbose:
            self.log_message("injecting fault %r", fault)
        if fault is None or fault.kind == "lose_answer":
            response = self._route(path, body)
            if fault is None:
                self._send(*response)
            else:
                self.close_connection = True  # side effects happened; the client never hears of them
        else:
            self._apply(fault)

    def _record(self, path: str, body: bytes) -> None:
        headers = Headers.of(self.headers.items())
        self.app.requests.append(RequestRecord(time.monotonic(), self.command, path, headers, body, tuple(self.client_address)))

    def _route(self, path: str, body: bytes) -> Response:
        return route(self.app.store, self.app.prefix, self.command, path, self.headers.get("X-Worker-ID"), body)

    def _apply(self, fault: Fault) -> None:
        if fault.kind == "status":
            headers = dict(fault.headers)
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "text/html" if fault.body.lstrip()[:1] == b"<" else "text/plain"
            self._send(fault.code, fault.body, headers)
        elif fault.kind == "garbage":
            # Labelled JSON on purpose: a broken server or proxy rarely tells the truth about it.
            self._send(200, fault.body, {"Content-Type": "application/json"})
        elif fault.kind == "reset":
            self._reset()
        elif fault.kind == "hang":
            self.app.stopping.wait(fault.seconds)
            self.close_connection = True
        elif fault.kind == "raw" and fault.stream is not None:
            self.close_connection = True
            try:
                for data in fault.stream(self.app.stopping):
                    if self.app.stopping.is_set():
                        break
                    self.wfile.write(data)
                    self.wfile.flush()
            except OSError:
                pass  # the client hung up: that is the point of most raw answers
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        except OSError:
            pass
        # rfile holds a reference to the socket; without closing it first, close() would only
        # mark the socket closed and socketserver's later shutdown(SHUT_WR) would send a polite FIN.
        self.rfile.close()
        self.connection.close()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise BadRequest(f"bad Content-Length {raw!r}") from None
        if not 0 <= length <= _MAX_BODY:
            raise BadRequest(f"Content-Length {length} out of range")
        data = self.rfile.read(length)
        if len(data) != length:
            raise BadRequest("body shorter than Content-Length")
        return data

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                break
            total += size
            if total > _MAX_BODY:
                raise BadRequest("chunked body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # CRLF after the chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers are of no interest
        return b"".join(parts)

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def route(store: Store, prefix: str, method: str, path: str, worker_id: str | None, body: bytes) -> Response:
    """The answer of protocol v1's endpoints under ``prefix`` (also served as WSGI/ASGI: wsgi.py)."""
    if not path.startswith(prefix + "/"):
        return json_response(404, {"status": "error", "error": f"no such path {path}"})
    endpoint = path[len(prefix):]
    if endpoint == "/get_task":
        if method != "GET":
            return _not_allowed("GET")
        return json_response(200, store.next_answer(worker_id))
    if endpoint == "/submit_result":
        if method != "POST":
            return _not_allowed("POST")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return json_response(400, {"status": "error", "error": "body is not JSON"})
        if not isinstance(doc, dict):
            return json_response(400, {"status": "error", "error": "body is not a JSON object"})
        store.record_result(doc)
        return json_response(200, {"status": "ok"})
    return json_response(404, {"status": "error", "error": f"no such endpoint {endpoint}"})


def _not_allowed(allow: str) -> Response:
    code, body, headers = json_response(405, {"status": "error", "error": f"use {allow}"})
    return code, body, {**headers, "Allow": allow}
