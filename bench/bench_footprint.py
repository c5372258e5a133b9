"""Footprint: memory and idle CPU of the worker (supervisor + N executors) vs an idle Celery prefork worker.

    python bench/bench_footprint.py [--quick]

For N = 2 and 8: our worker (`python main.py`, pool N, NO_TASK_SLEEP=1 s, so it
polls the dev server once a second) and `celery worker --pool prefork -c N` on Redis
run side by side; each first runs 2N echo tasks (every process has served), then
both sit idle. Memory: RSS and USS (psutil memory_full_info: pages only this
process holds) summed over the main process and all its children (ours includes
multiprocessing's resource tracker). Idle CPU: user+system time of the whole tree
over 60 s (10 s with --quick), as a share of one core.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from benchkit import (
    MB,
    TEST_CONFIG,
    CeleryWorker,
    DevServer,
    HiveWorker,
    RedisServer,
    cpu_seconds,
    emit,
    json_arg_parser,
    log,
    memory,
    row,
    tree,
    wait_for,
)

PAYLOAD = {"a": 1}


def settle(pids: list[int], timeout: float = 20.0) -> None:
    """Until the trees' RSS stops moving (imports done, caches warm)."""
    last = -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = memory([p for pid in pids for p in tree(pid)])[0]
        if last > 0 and abs(now - last) < 0.005 * last:
            return
        last = now
        time.sleep(1.0)


def measure(quick: bool) -> list[dict]:
    window = 10.0 if quick else 60.0
    workdir = Path(tempfile.mkdtemp(prefix="hive-bench-footprint-"))
    rows = []
    srv = DevServer(workdir)
    redis = RedisServer()
    os.environ["BENCH_REDIS_URL"] = redis.url
    import celery_app
    import redis as redis_client

    backend = redis_client.Redis(port=redis.port, db=1)
    try:
        for n in (2, 8):
            ours = HiveWorker(workdir / f"home-{n}", srv.url, TEST_CONFIG, n, env={"HIVE_NO_TASK_SLEEP": "1"})
            cel = CeleryWorker(redis, n, workdir)
            try:
                ours.wait_started()
                base = srv.results()
                srv.enqueue("echo", PAYLOAD, 2 * n)
                wait_for(lambda b=base, k=n: srv.results() >= b + 2 * k, 120, "our warm-up")
                backend.flushdb()
                for _ in range(2 * n):
                    celery_app.echo.delay(PAYLOAD)
                wait_for(lambda k=n: backend.dbsize() >= 2 * k, 120, "Celery warm-up")
                wait_for(lambda k=n, c=cel: len(c.children()) >= k, 60, "Celery children")
                settle([ours.pid, cel.pid])
                our_procs, cel_procs = tree(ours.pid), tree(cel.pid)
                our_rss, our_uss = memory(our_procs)
                cel_rss, cel_uss = memory(cel_procs)
                our0, cel0 = cpu_seconds(our_procs), cpu_seconds(cel_procs)
                sup0 = cpu_seconds(our_procs[:1])
                started = time.perf_counter()
                time.sleep(window)
                elapsed = time.perf_counter() - started
                our_cpu = 100 * (cpu_seconds(our_procs) - our0) / elapsed
                sup_cpu = 100 * (cpu_seconds(our_procs[:1]) - sup0) / elapsed
                cel_cpu = 100 * (cpu_seconds(cel_procs) - cel0) / elapsed
                log(f"footprint N={n}: ours {our_rss / MB:.0f}/{our_uss / MB:.0f} MB RSS/USS, {our_cpu:.2f}% idle; "
                    f"Celery {cel_rss / MB:.0f}/{cel_uss / MB:.0f} MB, {cel_cpu:.2f}%")
            finally:
                ours.stop()
                cel.stop()
            procs = f"{len(our_procs)} processes vs Celery's {len(cel_procs)}"
            rows.append(row("3 footprint", f"RSS, supervisor + {n} idle executors", our_rss / MB, "MB", cel_rss / MB,
                            f"Celery prefork -c {n}", note=procs))
            rows.append(row("3 footprint", f"USS, supervisor + {n} idle executors", our_uss / MB, "MB", cel_uss / MB,
                            f"Celery prefork -c {n}", target="<= 0.5x Celery", met=our_uss <= 0.5 * cel_uss))
            rows.append(row("3 footprint", f"idle CPU over {window:.0f} s, pool {n}, NO_TASK_SLEEP 1 s", our_cpu,
                            "% of a core", cel_cpu, f"Celery -c {n} idle", target="< 0.5%", met=our_cpu < 0.5,
                            note=f"supervisor alone {sup_cpu:.2f}%"))
    finally:
        redis.stop()
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> None:
    args = json_arg_parser(__doc__).parse_args()
    emit(measure(args.quick), args.json)


if __name__ == "__main__":
    main()
