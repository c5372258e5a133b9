"""supervisor/net/client.py on the wire: keep-alive reuse, a connection closed while idle, servers
that close after each answer, chunked and 100 Continue answers, Basic authentication, proxies,
redirects, Retry-After and certificate checks, each against a real server on 127.0.0.1.
tests/test_interop.py runs the real worker against real server stacks."""

from __future__ import annotations

import base64
import http.server
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
    bytes, a list of byte strings written one by one, or None to close without answering) and
    closes every connection after ``close_after`` answers, without a "Connection: close" header
    (as an idle timeout does)."""

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
                parts = [reply] if isinstance(reply, bytes) else reply
                for part in parts:
                    conn.sendall(part)
                    if len(parts) > 1:
                        time.sleep(0.002)  # separate segments: the reader must wait for the rest

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


class _Http10Handler(http.server.BaseHTTPRequestHandler):
    """Python's own http.server as HTTP/1.0: every answer ends with the server closing the
    connection (as gunicorn's sync workers and many WSGI servers do); status line, headers and
    body leave in separate writes (wbufsize 0)."""

    protocol_version = "HTTP/1.0"
    handed: list[int] = []
    posted: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.handed.append(len(self.handed) + 1)
        self._answer(orjson.dumps({"id": self.handed[-1], "task_type": "echo", "params": {"pad": "x" * 3000}}))

    def do_POST(self) -> None:
        self.posted.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self._answer(b'{"ok": true}')

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)  # no Content-Length: the body ends where the server closes


def test_a_server_that_closes_after_each_answer_is_read_by_both_threads(no_proxy_env):
    """The claim and submit threads each have a client, as in the worker. Before the fix, http.client
    closed the descriptor under the answer's reader (EBADF), or the other thread's new connection
    got that number and one thread read the other's answer: tasks lost, results posted twice."""
    handler = type("H", (_Http10Handler,), {"handed": [], "posted": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/api"
    try:
        got, errors = [], []

        def submit_all() -> None:
            submitter = HiveClient(url, "w", "2.0.0")
            for n in range(100):
                try:
                    submitter.submit(orjson.dumps({"task_id": n}))
                except ServerError as exc:
                    errors.append(str(exc))

        poster = threading.Thread(target=submit_all)
        poster.start()
        claimer = HiveClient(url, "w", "2.0.0")
        for _ in range(100):
            try:
                got.append(claimer.get_task().id)
            except ServerError as exc:
                errors.append(str(exc))
        poster.join()
        assert errors == []
        assert got == list(range(1, 101))
        assert sorted(p["task_id"] for p in handler.posted) == list(range(100))
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("framing", ["connection-close", "chunked", "continue+chunked"])
def test_answers_framed_every_way_a_server_may(framing, no_proxy_env):
    body = b'{"id": 7, "task_type": "echo", "params": {"a": 1}}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if framing == "connection-close":  # no length: the body ends at the close, in its own write
        parts = [head + b"Connection: close\r\n\r\n", body[:10], body[10:]]
    else:
        chunks = [b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:20], body[20:])] + [b"0\r\n\r\n"]
        parts = [head + b"Transfer-Encoding: chunked\r\n\r\n", *chunks]
        if framing.startswith("continue"):
            parts.insert(0, b"HTTP/1.1 100 Continue\r\n\r\n")
    srv = RawServer(lambda req: [*parts], close_after=1 if framing == "connection-close" else 1000)
    try:
        c = HiveClient(srv.url, "w", "2.0.0")
        for _ in range(3):
            task = c.get_task()
            assert (task.id, task.task_type, task.params) == (7, "echo", {"a": 1})
        assert srv.connections == (3 if framing == "connection-close" else 1)
    finally:
        srv.close()


def test_get_task_goes_out_only_on_a_fresh_or_just_answered_connection(monkeypatch, no_proxy_env):
    """get_task is not idempotent: a kept-alive connection idle past GET_REUSE_IDLE may be closed by
    the server at any moment, so get_task opens a new one; submit_result may still reuse it."""
    monkeypatch.setattr(client_mod, "GET_REUSE_IDLE", 0.3)
    srv = RawServer(lambda req: response())
    try:
        c = HiveClient(srv.url, "w", "2.0.0")
        assert c.get_task() == NO_TASKS
        assert c.get_task() == NO_TASKS  # back to back: the same connection
        assert srv.connections == 1
        time.sleep(0.4)
        c.submit(b'{"task_id": 1}')  # idle past the bound: submit may reuse it
        assert srv.connections == 1
        time.sleep(0.4)
        assert c.get_task() == NO_TASKS  # get_task may not
        assert (srv.connections, len(srv.requests)) == (2, 4)
    finally:
        srv.close()


@pytest.mark.parametrize("endpoint", ["get_task", "submit_result"])
def test_a_kept_alive_connection_closed_as_the_request_goes_out_is_replaced(endpoint, no_proxy_env):
    """The server closes the idle connection just as the second request arrives (it never reads it):
    the request goes once more on a new connection instead of failing the exchange."""
    count = iter(range(1, 100))
    srv = RawServer(lambda req: None if next(count) == 2 else response())
    try:
        c = HiveClient(srv.url, "w", "2.0.0")
        assert c.get_task() == NO_TASKS
        assert c.get_task() == NO_TASKS if endpoint == "get_task" else c.submit(b"{}") is None
        assert (srv.connections, len(srv.requests)) == (2, 3)
    finally:
        srv.close()


def test_basic_auth_from_the_server_url_goes_to_the_server_only(monkeypatch, no_proxy_env):
    """user:password in SERVER_URL is sent as Basic authentication, as 1.0.x's requests sent it;
    never in the request line, and never as the proxy's credentials."""
    srv = RawServer(lambda req: response())
    proxy = RawServer(lambda req: response())
    try:
        expected = b"Authorization: Basic " + base64.b64encode(b"fleet@corp:s:cret")
        url = srv.url.replace("http://", "http://fleet%40corp:s%3Acret@")
        assert HiveClient(url, "w", "2.0.0").get_task() == NO_TASKS
        request_line, *headers = srv.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert request_line == b"GET /api/get_task HTTP/1.1"
        assert expected in headers
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        assert HiveClient(url.replace("127.0.0.1", "hive.invalid"), "w", "2.0.0").get_task() == NO_TASKS
        request_line, *headers = proxy.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert request_line == f"GET http://hive.invalid:{srv.port}/api/get_task HTTP/1.1".encode()
        assert expected in headers
        assert not any(h.lower().startswith(b"proxy-authorization") for h in headers)
    finally:
        srv.close()
        proxy.close()


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


def test_the_worker_authenticates_with_the_url_and_never_shows_the_password(server, start_worker, no_proxy_env):
    from conftest import result_of

    server.enqueue("echo", {"x": 1}, task_id=41)
    url = server.url.replace("http://", "http://fleet:pw-9f3b1c@")
    w = start_worker(url, args=["--pool-size", "1"])
    assert result_of(server, 41)["status"] == "success"
    expected = "Basic " + base64.b64encode(b"fleet:pw-9f3b1c").decode()
    assert {r.headers.get("Authorization") for r in server.requests} == {expected}
    w.stop()
    seen = w.log() + w.console() + (w.home / "status.json").read_text(encoding="utf-8")
    assert "pw-9f3b1c" not in seen and "fleet:" not in seen
    assert "***@127.0.0.1" in w.log()
