"""supervisor/net/client.py on the wire: keep-alive reuse, a connection closed while idle, proxies,
redirects, Retry-After and certificate checks, each against a real server on 127.0.0.1."""

from __future__ import annotations

import base64
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver import Fault, HiveDevServer  # noqa: E402
from supervisor.model import result_body  # noqa: E402
from supervisor.net import client as client_mod  # noqa: E402
from supervisor.net.client import NO_TASKS, HiveClient, ServerError  # noqa: E402


class RawServer:
    """A bare HTTP/1.1 server: answers each request with ``answer(request_bytes)`` (raw response
    bytes, or None to close without answering) and closes every connection after
    ``close_after`` answers, without a "Connection: close" header (as an idle timeout does)."""

    def __init__(self, answer, close_after: int = 1000, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/api"
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_side=True)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except ssl.SSLError:
                continue  # a client that refused our certificate
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            for _ in range(self.close_after):
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                reply = self.answer(head + b"\r\n\r\n" + body)
                if reply is None:
                    return
                conn.sendall(reply)

    def close(self) -> None:
        # shutdown first: a bare close() leaves the accept() under way (and so the port, still
        # listening) alive, and a later test's client could be answered by this stale server.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def response(status: int = 200, body: bytes = b'{"status": "no_tasks"}', headers: dict | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_one_keep_alive_connection_and_both_headers(no_proxy_env):
    with HiveDevServer() as srv:
        srv.enqueue("echo", {"a": 1}, task_id=5)
        c = HiveClient(srv.url, "worker_0badc0de", "2.0.0")
        task = c.get_task()
        assert (task.id, task.task_type, task.params) == (5, "echo", {"a": 1})
        c.submit(result_body(task.id_bytes(), "worker_0badc0de", True, b'{"a": 1}'))
        for _ in range(5):
            assert c.get_task() == NO_TASKS
        c.close()
        reqs = list(srv.requests)
        assert len(reqs) == 7
        assert len({r.client for r in reqs}) == 1, "every request should reuse one keep-alive connection"
        assert all(r.headers.get("X-Worker-ID") == "worker_0badc0de" for r in reqs)
        assert all(r.headers.get("X-Worker-Version") == "2.0.0" for r in reqs)
        assert srv.results()[0]["result"] == {"a": 1}


def test_connection_closed_while_idle_is_replaced_and_nothing_is_sent_twice(no_proxy_env):
    srv = RawServer(lambda req: response(), close_after=1)
    try:
        c = HiveClient(srv.url, "w", "2.0.0")
        for _ in range(4):
            assert c.get_task() == NO_TASKS
            time.sleep(0.05)  # the server closes after each answer; the client must notice before reusing
        assert len(srv.requests) == 4
        assert srv.connections == 4
    finally:
        srv.close()


def test_a_request_that_gets_no_answer_is_an_error_not_a_silent_retry(no_proxy_env):
    srv = RawServer(lambda req: None)
    try:
        c = HiveClient(srv.url, "w", "2.0.0")
        with pytest.raises(ServerError, match="submit_result: RemoteDisconnected") as info:
            c.submit(b'{"task_id": 1}')
        assert not info.value.permanent
        assert len(srv.requests) == 1
    finally:
        srv.close()


def test_refused_connection_and_timeout_are_server_errors(no_proxy_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerError, match="get_task: ConnectionRefusedError"):
        HiveClient(f"http://127.0.0.1:{port}/api", "w", "2.0.0").get_task()
    with HiveDevServer() as srv:
        srv.inject(Fault.hang(1.0), path="/get_task")
        c = HiveClient(srv.url, "w", "2.0.0", get_timeout=0.3)
        with pytest.raises(ServerError, match=r"get_task: no answer within 0.3 s"):
            c.get_task()


def test_status_codes_retry_after_and_redirects(no_proxy_env):
    answers = iter([
        response(503, b"<html>busy</html>", {"Retry-After": "7"}),
        response(400, b'{"error": "bad"}'),
        response(429, b"slow down", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        response(301, b"", {"Location": "https://hive.example/api/get_task"}),
    ])
    srv = RawServer(lambda req: next(answers))
    try:
        c = HiveClient(srv.url, "w", "2.0.0")
        with pytest.raises(ServerError) as info:
            c.get_task()
        assert (info.value.retry_after, info.value.permanent) == (7.0, False)
        assert "HTTP 503 '<html>busy</html>'" in str(info.value)
        with pytest.raises(ServerError) as info:
            c.submit(b"{}")
        assert info.value.permanent
        with pytest.raises(ServerError) as info:
            c.get_task()
        assert (info.value.retry_after, info.value.permanent) == (0.0, False)  # a date in the past
        with pytest.raises(ServerError, match="redirect to 'https://hive.example/api/get_task'") as info:
            c.get_task()
        assert not info.value.permanent
        assert srv.connections == 1
    finally:
        srv.close()


def test_http_proxy_from_the_environment_with_credentials(monkeypatch, no_proxy_env):
    proxy = RawServer(lambda req: response())
    try:
        monkeypatch.setenv("http_proxy", f"http://user%40corp:s%3Acret@127.0.0.1:{proxy.port}")
        c = HiveClient("http://hive.invalid:3010/api", "w", "2.0.0")
        assert c.get_task() == NO_TASKS
        request_line, *headers = proxy.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert request_line == b"GET http://hive.invalid:3010/api/get_task HTTP/1.1"
        expected = b"Proxy-Authorization: Basic " + base64.b64encode(b"user@corp:s:cret")
        assert expected in headers
        monkeypatch.setenv("no_proxy", "hive.invalid")
        assert HiveClient("http://hive.invalid:3010/api", "w", "2.0.0").proxy is None
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def tls_cert():
    """A self-signed certificate for 127.0.0.1, test-only, committed (valid until 2126) so the
    tests need no openssl: the Windows lane has none."""
    d = Path(__file__).parent / "fixtures" / "tls"
    return d / "cert.pem", d / "key.pem"


def test_https_server_certificate_is_checked(tls_cert, monkeypatch, no_proxy_env):
    cert, key = tls_cert
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    raw = RawServer(lambda req: response(body=orjson.dumps({"id": 1, "task_type": "echo"})), tls=ctx)
    try:
        monkeypatch.setattr(client_mod, "_TLS", None)
        with pytest.raises(ServerError, match="CERTIFICATE_VERIFY_FAILED"):
            HiveClient(raw.url, "w", "2.0.0").get_task()
        assert raw.requests == []
        # Trusted through the standard variable (how an operator adds a private CA).
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        monkeypatch.setattr(client_mod, "_TLS", None)
        task = HiveClient(raw.url, "w", "2.0.0").get_task()
        assert (task.id, task.task_type) == (1, "echo")
    finally:
        raw.close()
        monkeypatch.setattr(client_mod, "_TLS", None)


class ConnectProxy:
    """A bare CONNECT proxy: records each CONNECT head, then relays bytes both ways."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(4096)
            if not data:
                conn.close()
                return
            buf += data
        head = buf.split(b"\r\n\r\n", 1)[0]
        self.heads.append(head)
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(conn, upstream), daemon=True).start()
        pump(upstream, conn)

    def close(self) -> None:
        # shutdown first: a bare close() leaves the accept() under way (and so the port, still
        # listening) alive, and a later test's client could be answered by this stale server.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def test_https_server_through_a_connect_proxy_with_credentials(tls_cert, monkeypatch, no_proxy_env):
    cert, key = tls_cert
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    raw = RawServer(lambda req: response(body=orjson.dumps({"id": "via-proxy", "task_type": "echo"})), tls=ctx)
    proxy = ConnectProxy()
    try:
        monkeypatch.setenv("https_proxy", f"http://ops:pw@127.0.0.1:{proxy.port}")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        monkeypatch.setattr(client_mod, "_TLS", None)
        c = HiveClient(raw.url, "w", "2.0.0")
        assert c.get_task().id == "via-proxy"
        assert c.get_task().id == "via-proxy"  # the tunnel is kept alive like any connection
        assert len(proxy.heads) == 1
        request_line, *headers = proxy.heads[0].split(b"\r\n")
        assert request_line.startswith(f"CONNECT 127.0.0.1:{raw.port} HTTP/1.".encode())  # http.client says 1.0
        assert b"Proxy-Authorization: Basic " + base64.b64encode(b"ops:pw") in headers
        # Inside the tunnel the request carries the plain path and the worker headers, never the proxy's.
        inner = raw.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert inner[0] == b"GET /api/get_task HTTP/1.1"
        assert not any(h.startswith(b"Proxy-Authorization") for h in inner)
    finally:
        proxy.close()
        raw.close()
        monkeypatch.setattr(client_mod, "_TLS", None)
