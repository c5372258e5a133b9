"""HiveDevServer: a local Hive server speaking protocol v1, for development and tests."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .faults import Fault, FaultHook, FaultQueue
from .handler import Handler
from .records import RequestLog
from .store import STATES, Store


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: HiveDevServer) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        host, self.server_port = self.server_address[:2]
        self.server_name = str(host)  # an AF_INET(6) server's host is a str (typeshed allows bytes too)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # Without this, Nagle + the client's delayed ACK cap a keep-alive connection at ~25 req/s.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._conns_lock:
            self._conns.add(sock)
        return sock, addr

    def close_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().close_request(request)

    def drop_connections(self) -> None:
        # Keep-alive handler threads would otherwise go on answering after stop().
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanishing mid-answer is what fault tests are about; only say so when asked.
        if self.app.verbose:
            super().handle_error(request, client_address)


def _norm_prefix(prefix: str) -> str:
    prefix = prefix.strip().rstrip("/")
    return prefix if not prefix or prefix.startswith("/") else "/" + prefix


class HiveDevServer:
    """A Hive server on a local port: `with HiveDevServer() as srv: ... srv.url ...`."""

    def __init__(self, db_path: str = ":memory:", host: str = "127.0.0.1", port: int = 0,
                 requeue_after: float = 300.0, prefix: str = "/api", verbose: bool = False) -> None:
        self.store = Store(db_path, requeue_after=requeue_after)
        self.host = host
        self.port = port
        self.prefix = _norm_prefix(prefix)
        self.verbose = verbose
        self.requests = RequestLog()
        # Consulted first on every request; the one-shot queue fed by inject() comes second.
        self.faults: FaultHook | None = None
        # Like faults, but also sees the request's body (a poison result: one task id refused).
        self.body_faults: Callable[[str, str, bytes], Fault | None] | None = None
        self.stopping = threading.Event()
        self._fault_queue = FaultQueue()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> HiveDevServer:
        if self._httpd is not None:
            return self
        self.stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        # A short poll interval keeps stop() fast; the loop is idle otherwise.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"hive-devserver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping.set()  # wakes handlers that are hanging on purpose
        httpd.shutdown()
        httpd.server_close()
        httpd.drop_connections()
        if self._thread is not None:
            self._thread.join(5)
        if not self.store.is_memory:
            self.store.close()  # frees the file (Windows can't delete an open db); reopens on next use

    def __enter__(self) -> HiveDevServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        """The API root a worker uses as SERVER_URL (still valid after stop(); start() again reuses the port)."""
        if self.port == 0:
            raise RuntimeError("server not started: no port yet")
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.prefix}"

    # -- faults -------------------------------------------------------------

    def inject(self, *faults: Fault, path: str | None = None, method: str | None = None) -> None:
        """Queue one-shot faults, used in order by the next requests matching `path` (suffix) and `method`."""
        self._fault_queue.add(faults, path, method)

    def clear_faults(self) -> None:
        self._fault_queue.clear()

    @property
    def pending_faults(self) -> int:
        return len(self._fault_queue)

    def fault_for(self, method: str, path: str, body: bytes = b"") -> Fault | None:
        hook, by_body = self.faults, self.body_faults
        fault = by_body(method, path, body) if by_body is not None else None
        if fault is None and hook is not None:
            fault = hook(method, path)
        return fault if fault is not None else self._fault_queue.take(method, path)

    # -- store pass-throughs ------------------------------------------------

    @property
    def requeue_after(self) -> float:
        return self.store.requeue_after

    @requeue_after.setter
    def requeue_after(self, seconds: float) -> None:
        self.store.requeue_after = seconds

    def enqueue(self, task_type: str, params: Any = None, task_id: Any = None) -> Any:
        return self.store.enqueue(task_type, params, task_id)

    def enqueue_raw(self, obj: Any) -> None:
        self.store.enqueue_raw(obj)

    def results(self) -> list[dict[str, Any]]:
        return self.store.results()


DEMO_TASKS: tuple[tuple[str, dict[str, Any]], ...] = (("get_system_info", {}), ("example", {"text": "hello from the demo"}), ("get_system_info", {}),
              ("example", {"text": "second demo"}), ("get_system_info", {}))


def enqueue_demo(server: HiveDevServer) -> None:
    """A few get_system_info and example tasks (``serve --demo``, and the embedded server's first run)."""
    for task_type, params in DEMO_TASKS:
        server.enqueue(task_type, params)


def start_demo(db_path: str) -> HiveDevServer:
    """The embedded server ``python main.py`` starts when no Hive server is given: the demo tasks
    are queued on the first run only (a database that never had a task), not at every start."""
    server = HiveDevServer(db_path).start()
    counts = server.store.counts()
    if not any(counts[state] for state in STATES):
        enqueue_demo(server)
    return server
