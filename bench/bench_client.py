"""CPU per HTTP exchange of the worker's client, beside a base revision's client and urllib3.

    python bench/bench_client.py [--base REV] [--n 2000] [--rounds 5] [--json]

One client thread sends N get_task requests to a local server (its own process, Python's
http.server with Nagle off) and its thread CPU time is divided by N. Two servers:

- keep-alive: HTTP/1.1 with Content-Length, the connection kept between answers;
- close: HTTP/1.0, the server closes after each answer (gunicorn sync, Werkzeug, many WSGI
  servers), so every exchange opens a connection.

Clients: "current" (this tree's supervisor/net/client.py), "base" (the same file at --base,
default 3c2b106, the last before issue 21, loaded beside the current answers.py) and "urllib3" (an HTTPConnectionPool, what
requests is built on, answers classified by the same answers.py). Rounds take turns; figures are
medians over rounds. A client that fails an exchange is reported with its error count, not a time.
"""

from __future__ import annotations

import http.server
import multiprocessing
import subprocess
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from benchkit import ROOT, emit, json_arg_parser, log, median, row

BODY = b'{"status": "no_tasks"}'


def _serve(protocol: str, port_out: Any) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = protocol
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if protocol == "HTTP/1.1":
                self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(srv.server_port)
    srv.serve_forever()


def base_client(rev: str) -> types.ModuleType:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:supervisor/net/client.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("base_client")
    module.__file__ = f"<{rev}:supervisor/net/client.py>"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def clients(url: str, rev: str) -> dict[str, Callable[[], Any]]:
    import urllib3

    from supervisor.net import client as current
    from supervisor.net.answers import classify_task

    base = base_client(rev)
    host, port = url.split("//")[1].split("/")[0].split(":")
    pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=1, retries=False)
    headers = {"X-Worker-ID": "bench", "X-Worker-Version": "bench"}

    def via_urllib3() -> Any:
        resp = pool.request("GET", "/api/get_task", headers=headers, preload_content=False,
                            timeout=urllib3.Timeout(connect=20, read=20))
        body = resp.read()
        resp.release_conn()
        outcome = classify_task(resp.status, resp.headers, body)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return {"current": current.HiveClient(url, "bench", "bench").get_task,
            "base": base.HiveClient(url, "bench", "bench").get_task,
            "urllib3": via_urllib3}


def one_round(call: Callable[[], Any], n: int) -> tuple[float, int]:
    """Microseconds of this thread's CPU per exchange, and how many exchanges failed."""
    errors = 0
    cpu = time.thread_time()
    for _ in range(n):
        try:
            call()
        except Exception:  # noqa: BLE001 - counted: a client that cannot read this server
            errors += 1
    return (time.thread_time() - cpu) / n * 1e6, errors


def main() -> None:
    ap = json_arg_parser(__doc__)
    ap.add_argument("--base", default="3c2b106", help="the client to compare (default: the last one before issue 21)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for mode, protocol in (("keep-alive", "HTTP/1.1"), ("close", "HTTP/1.0")):
        port_out = ctx.Queue()
        server = ctx.Process(target=_serve, args=(protocol, port_out), daemon=True)
        server.start()
        try:
            calls = clients(f"http://127.0.0.1:{port_out.get(timeout=30)}/api", args.base)
            figures: dict[str, list[float]] = {name: [] for name in calls}
            failed: dict[str, int] = dict.fromkeys(calls, 0)
            for r in range(args.rounds):
                order = list(calls) if r % 2 == 0 else list(reversed(calls))
                for name in order:
                    us, errors = one_round(calls[name], args.n)
                    figures[name].append(us)
                    failed[name] += errors
            for name in calls:
                if failed[name]:
                    log(f"{mode}: {name} failed {failed[name]} of {args.n * args.rounds} exchanges")
                    rows.append(row("client", f"{mode}: {name}", None, "us CPU/exchange",
                                    note=f"{failed[name]} of {args.n * args.rounds} exchanges failed"))
                    continue
                rows.append(row("client", f"{mode}: {name}", median(figures[name]), "us CPU/exchange",
                                median(figures["current"]), "current"))
        finally:
            server.terminate()
    emit(rows, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
