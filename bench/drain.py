"""Back-to-back drains of the real worker, for measuring a change to the supervisor (not part of run.py).

    python bench/drain.py [--tasks 800] [--pool 2] [--repeats 3] [--strace] [VARIANT ...]

Each VARIANT is "" (as shipped), a bench/whatif.py patch set (e.g. "claimers2"),
"env:NAME=VALUE" (the worker started with that environment variable), or "tree:DIR" (the
worker of another checkout, e.g. ``git archive <main> | tar -x -C DIR``, with its own
tests/support/test_config.py). Every repeat runs
each variant once against one dev server, so neighbours in time are compared; the lines
give tasks/s, the supervisor's user and system CPU per task, the executors' and the dev
server's CPU per task and when the last task was claimed (as a share of the drain).
With --strace, one more drain of the first variant runs under `strace -c -f` attached to
the supervisor and prints its syscall counts per task (how many GIL hand-overs, file
operations and pipe operations a task costs).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from bench_e2e import OUR_ENV, PAYLOAD, ours_drain, ours_warm

from common import TEST_CONFIG, DevServer, HiveWorker, wait_for


def _worker(workdir: Path, srv: DevServer, variant: str, pool: int, name: str) -> HiveWorker:
    env, patches = dict(OUR_ENV), variant
    if variant.startswith("env:"):
        key, _, value = variant[4:].partition("=")
        env[key], patches = value, ""
    if variant.startswith("tree:"):
        root = Path(variant[5:]).resolve()
        return HiveWorker(workdir / name, srv.url, root / "tests" / "support" / "test_config.py", pool, env=env,
                          root=root)
    return HiveWorker(workdir / name, srv.url, TEST_CONFIG, pool, env=env, patches=patches)


def _strace(workdir: Path, srv: DevServer, variant: str, pool: int, tasks: int) -> None:
    if not shutil.which("strace"):
        print("strace is not installed (apt-get install -y strace)")
        return
    worker = _worker(workdir, srv, variant, pool, "home-strace")
    out = workdir / "strace.txt"
    try:
        ours_warm(srv, worker)
        tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(worker.pid), "-o", str(out)])
        time.sleep(1.0)
        base = srv.results()
        srv.enqueue("echo", PAYLOAD, tasks)
        wait_for(lambda: srv.results() >= base + tasks, 900, "traced drain", 0.005)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    finally:
        worker.stop()
    print(f"syscalls of the supervisor per task ({variant or 'as shipped'}, {tasks} tasks, under strace):")
    for line in out.read_text().splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
            print(f"  {parts[-1]:16s} {int(parts[3]) / tasks:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", default=[""])
    ap.add_argument("--tasks", type=int, default=800)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strace", action="store_true")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hive-bench-drain-"))
    srv = DevServer(workdir)
    try:
        for rep in range(args.repeats):
            for i, variant in enumerate(args.variants):
                worker = _worker(workdir, srv, variant, args.pool, f"home-{rep}-{i}")
                try:
                    ours_warm(srv, worker)
                    before = psutil.Process(worker.pid).cpu_times()
                    m = ours_drain(srv, worker, args.tasks)
                    after = psutil.Process(worker.pid).cpu_times()
                finally:
                    worker.stop()
                user = 1000 * (after.user - before.user) / args.tasks
                system = 1000 * (after.system - before.system) / args.tasks
                print(f"{variant or 'as shipped':24s} {m['rate']:6.0f} tasks/s  supervisor user {user:.2f} + "
                      f"system {system:.2f} ms/task  executors {m['exec_ms']:.2f}  server {m['server_ms']:.2f}  "
                      f"last claim at {m['claimed_s'] / m['wall_s']:.0%}", flush=True)
        if args.strace:
            _strace(workdir, srv, args.variants[0], args.pool, min(args.tasks, 500))
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
