"""The real worker against real HTTP servers and proxies nobody on this project wrote (issue 21,
docs/interop.md). Each serves the dev server's queue (devserver/wsgi.py, asgi.py); the worker
(`python main.py`, pool 2) drains DRAIN echo tasks; then every task must have been handed out
exactly once and answered exactly once (protocol v1 has no requeue: a get_task answer the
worker loses is a task lost for good), and the worker's log must hold no error and no network
warning.

A server that cannot be had here skips with the reason. The Windows lane (.ci/windows) runs the
HTTP/1.0 and waitress cases in its own Windows CPython, and the gunicorn-sync case against a
gunicorn that the lane starts on the Linux side and names in INTEROP_GUNICORN_SYNC (Wine shares
the loopback).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import pytest
from conftest import ROOT, WINDOWS, wait_for

DRAIN = 300
WINDOWS_CASES = ("http10", "gunicorn-sync", "waitress")  # what the Windows lane runs with the worker on Windows CPython
EXTERNAL_GUNICORN = "INTEROP_GUNICORN_SYNC"  # root URL of a gunicorn -k sync serving devserver.wsgi
# The cases that close idle keep-alive connections come in waves of tasks: between two, the worker
# idles NO_TASK_SLEEP (+-10 %), longer than the server's keep-alive timeout, so the server closes
# the worker's connections under it. nginx closes them after 0.5 s, within the second in which the
# client would still reuse a connection (docs/settings.md): the close must be seen before a
# get_task goes out. gunicorn (whole seconds only) closes them after 1 s.
NGINX_IDLE_CLOSE, NGINX_IDLE = "500ms", {"HIVE_NO_TASK_SLEEP": "0.8"}
GUNICORN_IDLE_CLOSE, GUNICORN_IDLE = "1", {"HIVE_NO_TASK_SLEEP": "1.6"}
STALL = 30.0  # seconds without a new result after which a drain is over, complete or not (Wine starts slowly)
# Lines that fail a drain: any error, and any warning of the network side.
NETWORK_LOGGERS = ("hive.claim", "hive.submit", "hive.client")


@dataclass
class Served:
    """What a case gives the worker and the test."""

    url: str  # the worker's SERVER_URL (through the proxy, where there is one)
    admin: str  # the app server's /_devserver root (always direct)
    worker_env: dict[str, str] = field(default_factory=dict)
    proxy_log: Path | None = None  # a proxy's log, checked to have seen the worker's requests
    waves: int = 1  # the drain comes in this many waves, the worker idling between them


# -- talking to the app, never through a proxy --------------------------------------------------

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _call(url: str, body: Any = None, opener: urllib.request.OpenerDirector = _DIRECT) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with opener.open(req, timeout=10) as resp:
        return json.loads(resp.read())


def _answers(url: str, opener: urllib.request.OpenerDirector = _DIRECT) -> bool:
    try:
        _call(url, opener=opener)
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- servers ---------------------------------------------------------------------------------

class _Process:
    """A server process of the test's own, its output in a file, stopped (by its pid) at the end."""

    def __init__(self, name: str, argv: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = tmp / f"{name}.out"
        self._out = open(self.log_path, "wb")
        # On Windows the worker's graceful stop is a Ctrl+C to the whole console: a group of its own
        # keeps the server out of it (it is stopped by TerminateProcess below).
        flags = subprocess.CREATE_NEW_PROCESS_GROUP if WINDOWS else 0
        self.proc = subprocess.Popen(argv, cwd=str(ROOT), env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
                                     stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     creationflags=flags)

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_answering(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        wait_for(lambda: self.proc.poll() is not None or ready(), timeout, interval=0.1, what=f"{self.name} to answer")
        assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}:\n{self.output()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


def _python_server(stack: ExitStack, tmp: Path, name: str, argv: list[str]) -> str:
    """Start ``python argv...`` serving the queue in tmp (PORT in argv is replaced); its root URL."""
    port = _free_port()
    proc = _Process(name, [sys.executable, *(a.replace("PORT", str(port)) for a in argv)], tmp,
                    {"DEVSERVER_DB": str(tmp / "queue.sqlite")})
    stack.callback(proc.stop)
    root = f"http://127.0.0.1:{port}"
    proc.wait_answering(lambda: _answers(f"{root}/_devserver/tally"))
    return root


def _gunicorn(stack: ExitStack, tmp: Path, *options: str) -> str:
    pytest.importorskip("gunicorn", reason="gunicorn is not installed (requirements-interop.txt)")
    return _python_server(stack, tmp, "gunicorn", ["-m", "gunicorn", "-b", "127.0.0.1:PORT", *options,
                                                   "devserver.wsgi:application"])


def _waitress(stack: ExitStack, tmp: Path) -> str:
    pytest.importorskip("waitress", reason="waitress is not installed (requirements-dev.txt)")
    return _python_server(stack, tmp, "waitress", ["-m", "waitress", "--host=127.0.0.1", "--port=PORT",
                                                   "devserver.wsgi:application"])


def _uvicorn(stack: ExitStack, tmp: Path) -> str:
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (requirements-interop.txt)")
    return _python_server(stack, tmp, "uvicorn", ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "PORT",
                                                  "--no-access-log", "devserver.asgi:application"])


def _debian_binary(name: str, package: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        pytest.skip(f"{name} is not installed (Debian's {package}, installed by .ci/run)")
    return found


class _Http10Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.0"  # one answer per connection, then close (as BaseHTTPRequestHandler's default)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        pass


class _Http10Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks getfqdn(): a reverse DNS lookup that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


def _serve_http10(stack: ExitStack, tmp: Path) -> Served:
    from devserver.wsgi import HiveApp

    httpd = _Http10Server(("127.0.0.1", 0), _Http10Handler)
    httpd.set_app(HiveApp(str(tmp / "queue.sqlite")))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stack.callback(httpd.server_close)
    stack.callback(httpd.shutdown)
    root = f"http://127.0.0.1:{httpd.server_address[1]}"
    wait_for(lambda: _answers(f"{root}/_devserver/tally"), 10, what="the HTTP/1.0 server to answer")
    return Served(f"{root}/api", f"{root}/_devserver")


def _serve_gunicorn_sync(stack: ExitStack, tmp: Path) -> Served:
    root = os.environ.get(EXTERNAL_GUNICORN) or None
    if root is None:
        if WINDOWS:
            pytest.skip(f"gunicorn does not run on Windows: .ci/windows starts one on the Linux side and names it "
                        f"in {EXTERNAL_GUNICORN}, which is not set")
        # Sync workers answer every request with Connection: close, headers and body in two writes.
        root = _gunicorn(stack, tmp, "-w", "2", "-k", "sync")
    root = root.rstrip("/")
    return Served(f"{root}/api", f"{root}/_devserver")


def _serve_gunicorn_gthread(stack: ExitStack, tmp: Path) -> Served:
    root = _gunicorn(stack, tmp, "-w", "1", "-k", "gthread", "--threads", "4", "--keep-alive", GUNICORN_IDLE_CLOSE)
    return Served(f"{root}/api", f"{root}/_devserver", dict(GUNICORN_IDLE), waves=3)


def _serve_werkzeug(stack: ExitStack, tmp: Path) -> Served:
    pytest.importorskip("werkzeug", reason="werkzeug is not installed (requirements-interop.txt)")
    # What `flask run` does: run_simple, threaded, HTTP/1.1 keep-alive.
    code = ("import logging, sys; from werkzeug.serving import run_simple; from devserver.wsgi import application; "
            "logging.getLogger('werkzeug').setLevel(logging.WARNING); "
            "run_simple('127.0.0.1', int(sys.argv[1]), application, threaded=True)")
    root = _python_server(stack, tmp, "werkzeug", ["-c", code, "PORT"])
    return Served(f"{root}/api", f"{root}/_devserver")


def _serve_uvicorn(stack: ExitStack, tmp: Path) -> Served:
    root = _uvicorn(stack, tmp)  # chunked answers (devserver/asgi.py), keep-alive
    return Served(f"{root}/api", f"{root}/_devserver")


def _serve_waitress(stack: ExitStack, tmp: Path) -> Served:
    root = _waitress(stack, tmp)
    return Served(f"{root}/api", f"{root}/_devserver")


def _serve_nginx(stack: ExitStack, tmp: Path) -> Served:
    nginx = _debian_binary("nginx", "nginx")
    backend = _uvicorn(stack, tmp)
    port = _free_port()
    run = tmp / "nginx"
    run.mkdir()
    # master_process off: one process as the current user, no switch to a service user; every
    # path in tmp. keepalive_timeout closes a worker's idle connection between two waves,
    # keepalive_requests ends a busy one with Connection: close every 30 answers.
    conf = run / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format conn "$connection $connection_requests $request $status";
    access_log {run}/access.log conn;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    keepalive_timeout {NGINX_IDLE_CLOSE};
    keepalive_requests 30;
    upstream app {{ server {backend.removeprefix("http://")}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    proc = _Process("nginx", [nginx, "-e", str(run / "error.log"), "-p", str(run), "-c", str(conf)], tmp)
    stack.callback(proc.stop)
    root = f"http://127.0.0.1:{port}"
    proc.wait_answering(lambda: _answers(f"{root}/_devserver/tally"))
    return Served(f"{root}/api", f"{backend}/_devserver", dict(NGINX_IDLE), proxy_log=run / "access.log",
                  waves=3)


def _serve_tinyproxy(stack: ExitStack, tmp: Path) -> Served:
    tinyproxy = _debian_binary("tinyproxy", "tinyproxy")
    backend = _waitress(stack, tmp)
    port = _free_port()
    log = tmp / "tinyproxy.log"
    conf = tmp / "tinyproxy.conf"
    conf.write_text(f"""
Port {port}
Listen 127.0.0.1
Timeout 30
MaxClients 20
Allow 127.0.0.1
LogFile "{log}"
LogLevel Info
PidFile "{tmp / 'tinyproxy.pid'}"
""")
    proc = _Process("tinyproxy", [tinyproxy, "-d", "-c", str(conf)], tmp)
    stack.callback(proc.stop)
    proxy = f"http://127.0.0.1:{port}"
    via = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    proc.wait_answering(lambda: _answers(f"{backend}/_devserver/tally", via))
    # The worker finds the proxy where requests did: in the environment (supervisor/net/client.py).
    env = {"HTTP_PROXY": proxy, "http_proxy": proxy}
    return Served(f"{backend}/api", f"{backend}/_devserver", env, proxy_log=log)


CASES: dict[str, Callable[[ExitStack, Path], Served]] = {
    "http10": _serve_http10,
    "gunicorn-sync": _serve_gunicorn_sync,
    "gunicorn-gthread": _serve_gunicorn_gthread,
    "werkzeug": _serve_werkzeug,
    "uvicorn": _serve_uvicorn,
    "waitress": _serve_waitress,
    "nginx": _serve_nginx,
    "tinyproxy": _serve_tinyproxy,
}


@contextmanager
def _served(case: str, tmp: Path) -> Iterator[Served]:
    with ExitStack() as stack:
        yield CASES[case](stack, tmp)


# -- the drain -------------------------------------------------------------------------------

@dataclass
class Drain:
    tasks: int
    seconds: float
    lost: int  # never answered (handed out or not)
    duplicates: int  # answers beyond the first, plus hand-outs beyond the first
    failed: int  # answered, but not as a success (the echo task cannot fail)
    bad_lines: list[str]

    def line(self, case: str) -> str:
        return (f"interop {case}: {self.tasks} tasks in {self.seconds:.1f} s, lost {self.lost}, "
                f"duplicates {self.duplicates}, failed {self.failed}, error lines {len(self.bad_lines)}")


def bad_log_lines(log: str) -> list[str]:
    """Every ERROR/CRITICAL line, and every WARNING of the network side (NETWORK_LOGGERS)."""
    out = []
    for line in log.splitlines():
        parts = line.split(None, 4)  # date, time, level, logger:, message
        if len(parts) < 4:
            continue
        level, logger = parts[2], parts[3].rstrip(":")
        if level in ("ERROR", "CRITICAL") or (level == "WARNING" and logger in NETWORK_LOGGERS):
            out.append(line)
    return out


def _tally(admin: str, ids: set[str]) -> dict[str, dict[str, int]]:
    return {t["id"]: t for t in _call(f"{admin}/tally")["tasks"] if t["id"] in ids}


def _settle(admin: str, ids: set[str]) -> None:
    """Until every task of ``ids`` has an answer, or none came for STALL seconds."""
    answered, changed = -1, time.monotonic()
    while True:
        now = sum(1 for t in _tally(admin, ids).values() if t["results"])
        if now == len(ids):
            return
        if now != answered:
            answered, changed = now, time.monotonic()
        elif time.monotonic() - changed > STALL:
            return
        time.sleep(0.1)


def drain(served: Served, start_worker: Callable[..., Any], case: str) -> Drain:
    run = uuid.uuid4().hex[:8]  # ids unique per run: an external server's queue outlives a test
    waves = [[f"{case}-{run}-{i}" for i in range(w, DRAIN, served.waves)] for w in range(served.waves)]
    ids = {i for wave in waves for i in wave}

    def enqueue(wave: list[str]) -> None:
        _call(f"{served.admin}/enqueue", {"tasks": [{"task_type": "echo", "params": {"i": i}, "id": i} for i in wave]})

    enqueue(waves[0])
    start = time.monotonic()
    # No proxy from the CI machine's environment, unless the case names one.
    env = {"HTTP_PROXY": "", "http_proxy": "", "NO_PROXY": "", "no_proxy": "", **served.worker_env}
    worker = start_worker(served.url, env=env)
    for n, wave in enumerate(waves):
        _settle(served.admin, set(wave))
        if n + 1 < len(waves):
            enqueue(waves[n + 1])
    seconds = time.monotonic() - start
    worker.stop()
    tally = _tally(served.admin, ids)
    return Drain(tasks=len(ids), seconds=seconds,
                 lost=sum(1 for i in ids if not tally.get(i, {}).get("results")),
                 duplicates=sum(max(0, t["results"] - 1) + max(0, t["handed_out"] - 1) for t in tally.values()),
                 failed=sum(1 for t in tally.values() if t["results"] and not t["successes"]),
                 bad_lines=bad_log_lines(worker.log()))


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", list(CASES))
def test_worker_drains_through_a_real_server(case: str, tmp_path: Path, start_worker) -> None:
    if WINDOWS and case not in WINDOWS_CASES:
        pytest.skip(f"the Windows lane runs the {', '.join(WINDOWS_CASES)} cases; the other servers are "
                    "Linux-side (requirements-interop.txt, Debian packages)")
    with _served(case, tmp_path) as served:
        result = drain(served, start_worker, case)
        print(result.line(case))
        assert (result.lost, result.duplicates, result.failed, result.bad_lines) == (0, 0, 0, []), \
            "\n".join([result.line(case), *result.bad_lines[:5]])
        if served.proxy_log is not None:  # the worker's traffic really went through the proxy
            assert "/api/get_task" in served.proxy_log.read_text(errors="replace")
            assert "/api/submit_result" in served.proxy_log.read_text(errors="replace")


def test_bad_log_lines_are_errors_and_network_warnings() -> None:
    log = "\n".join([
        "2026-12-04 12:49:26,579 INFO    hive.claim: claimed task 293 (echo)",
        "2026-12-04 12:49:26,580 WARNING hive.claim: cannot get a task: get_task: OSError: [Errno 9]; next try in 0.5 s",
        "2026-12-04 12:49:26,581 WARNING hive.supervisor: task 'x' (echo) failed in 0.00 s, kind raised: boom",
        "2026-12-04 12:49:26,582 ERROR   hive.pool: task 'y' raised:",
        "    Traceback (most recent call last):",
    ])
    assert [line.split()[3] for line in bad_log_lines(log)] == ["hive.claim:", "hive.pool:"]
