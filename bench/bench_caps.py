"""What the hostile-input guards cost on the normal path (issue 14): client CPU per GET+POST.

    python bench/bench_caps.py --baseline DIR [--pairs 2000] [--rounds 5]

DIR is a checkout of the tree to compare against (e.g. ``git archive <main> | tar -x -C DIR``).
Both trees' ``supervisor.net.client.HiveClient`` run the same loop, alternately, in fresh
processes, against one canned-answer server in its own process (so only the client's CPU
is counted): get_task answers either a small task (an echo with two params, what most of
the fleet's tasks look like on the wire) or a prom_pars task of 300 products (~25 KB, the
largest real task); submit_result answers a small JSON. What is measured is the client process's CPU time per
GET+POST pair (the size caps, the deadline reader, the nesting check of id and params),
reported as medians and their ratio. The nesting check alone is timed on the same params.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from common import ROOT, median  # noqa: E402 - bench/common.py puts the repo root on sys.path

SMALL = orjson.dumps({"id": 123456, "task_type": "echo", "params": {"text": "hello", "n": 1}})
TASK = orjson.dumps({"id": 123456, "task_type": "prom_pars", "params": {"products_to_scrape": [
    {"product_id": 1000 + i, "url": f"https://prom.ua/ua/p{1000000 + i}-some-product-name.html"}
    for i in range(300)]}})
SUBMITTED = orjson.dumps({"status": "ok"})


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def serve(port_out: multiprocessing.connection.Connection) -> None:
    """Keep-alive HTTP/1.1 with canned answers; reads just enough of each request."""
    sock = socket.create_server(("127.0.0.1", 0))
    port_out.send(sock.getsockname()[1])
    small, big, post = _answer(SMALL), _answer(TASK), _answer(SUBMITTED)

    def handle(conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                if head.startswith(b"GET"):
                    conn.sendall(big if b"/big/" in head.split(b"\r\n", 1)[0] else small)
                else:
                    conn.sendall(post)

    while True:
        conn, _ = sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


CLIENT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from supervisor.net.client import HiveClient
c = HiveClient(f"http://127.0.0.1:{sys.argv[2]}/{sys.argv[4]}", "bench_0000", "2.0.0")
body = b'{"task_id": 123456, "worker_id": "bench_0000", "status": "success", "result": [1, 2, 3]}'
for _ in range(200):
    c.get_task(); c.submit(body)
n = int(sys.argv[3])
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(n):
    c.get_task(); c.submit(body)
print((time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6)
"""


def run_client(tree: Path, port: int, pairs: int, shape: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", CLIENT, str(tree), str(port), str(pairs), shape], capture_output=True,
                         text=True, check=True, cwd=str(tree)).stdout.split()
    return float(out[0]), float(out[1])


def nesting_check_us() -> float:
    sys.path.insert(0, str(ROOT))
    from supervisor.net.client import too_deep

    params = orjson.loads(TASK)["params"]
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        too_deep(params)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, type=Path, help="checkout of the tree to compare against")
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    server = ctx.Process(target=serve, args=(send,), daemon=True)
    server.start()
    port = recv.recv()
    try:
        for shape, label in (("small", "small task"), ("big", "300-product prom_pars task")):
            ours: list[tuple[float, float]] = []
            base: list[tuple[float, float]] = []
            for _ in range(args.rounds):  # alternated, so drift on a shared machine hits both alike
                base.append(run_client(args.baseline, port, args.pairs, shape))
                ours.append(run_client(ROOT, port, args.pairs, shape))
            ours_cpu, base_cpu = median(c for c, _ in ours), median(c for c, _ in base)
            ours_wall, base_wall = median(w for _, w in ours), median(w for _, w in base)
            print(f"{label}: client CPU per GET+POST pair: this tree {ours_cpu:.0f} us, baseline {base_cpu:.0f} us, "
                  f"ratio {ours_cpu / base_cpu:.3f}; wall per pair {ours_wall:.0f} us vs {base_wall:.0f} us, "
                  f"ratio {ours_wall / base_wall:.3f}")
            print("  rounds, CPU us this tree/baseline: "
                  + ", ".join(f"{o[0]:.0f}/{b[0]:.0f}" for o, b in zip(ours, base, strict=True)))
    finally:
        server.kill()
    print(f"nesting check of those params alone: {nesting_check_us():.1f} us per task")


if __name__ == "__main__":
    main()
