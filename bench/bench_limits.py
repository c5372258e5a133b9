"""Limits: reaction time from a breach to the whole tree being dead, and the cost of monitoring.

    python bench/bench_limits.py [--quick]

Reaction: the real worker (pool 1, TASK_MEMORY_LIMIT_MB=300, LIMIT_CHECK_INTERVAL as
shipped) runs bench_eat, whose child process allocates and touches ~8 MB every 5 ms.
This process polls the executor's tree every ~2 ms straight from /proc (RSS from
statm, descendants from /proc/<pid>/task/*/children); the clock starts when the
tree's RSS first exceeds the limit and stops when no process of that tree is
running any more (gone or a zombie). Repeated; median and max.

Monitoring: the real worker with 16 executors all busy with a sleeping task; the
supervisor's CPU time over a window, limits on (as shipped: proctree.TreeMonitor walks
only the executors' trees) vs all limits off. Beside it, what one check of one
executor's tree costs with TreeMonitor against one full /proc scan (Snapshot, the
fallback where the kernel has no /proc/<pid>/task/<tid>/children).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import BENCH_CONFIG, MB, DevServer, HiveWorker, emit, json_arg_parser, log, median, row, wait_for

PAGE = os.sysconf("SC_PAGE_SIZE")
LIMIT_MB = 300


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(p) for p in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        stack.extend(children_of(p))
    return found


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    state = data[data.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X")


def is_tracker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()
    except OSError:
        return True


def reaction_round(srv: DevServer, supervisor: int, limit: int, timeout: float = 30.0) -> tuple[float, str]:
    base = srv.results()
    srv.enqueue("bench_eat", {"step_mb": 8, "pause": 0.005, "where": "child"}, 1)
    crossed = None
    root = 0
    tracked: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.perf_counter()
        if crossed is None:
            for ex in children_of(supervisor):
                if is_tracker(ex):
                    continue
                pids = descendants(ex)
                if sum(rss(p) for p in pids) > limit:
                    crossed, root, tracked = now, ex, set(pids)
                    break
        else:
            if running(root):
                tracked.update(descendants(root))
            if not any(running(p) for p in tracked):
                dead = now
                wait_for(lambda: srv.results() > base, 30, "the memory_limit result")
                status = srv.last_results(1)[0][1]
                kind = srv.conn.execute("SELECT result FROM results ORDER BY seq DESC LIMIT 1").fetchone()[0]
                return dead - crossed, kind if status == "failure" else f"unexpected {status}"
        time.sleep(0.002)
    raise RuntimeError("no breach or no kill within the timeout")


def per_check_costs() -> tuple[float, float]:
    """Median seconds of one Snapshot() and of one TreeMonitor.usage() of a 3-process tree."""
    from common.proctree import Snapshot, TreeMonitor

    code = "import subprocess, sys, time; c = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])" \
           " for _ in range(2)]; time.sleep(60)"
    root = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(1.0)
        monitor = TreeMonitor()
        monitor.usage(root.pid)  # opens its fds once, as the monitor does at a task's first check
        scans, walks = [], []
        for _ in range(50):
            started = time.perf_counter()
            Snapshot().usage(root.pid)
            scans.append(time.perf_counter() - started)
            started = time.perf_counter()
            monitor.usage(root.pid)
            walks.append(time.perf_counter() - started)
        monitor.close()
        return median(scans), median(walks)
    finally:
        root.kill()
        root.wait()


def monitoring(srv: DevServer, workdir: Path, limits: bool, window: float) -> float:
    env = {"HIVE_SHUTDOWN_GRACE": "1"}
    if not limits:
        env.update(HIVE_TASK_TIME_LIMIT="0", HIVE_TASK_CPU_LIMIT="0", HIVE_TASK_MEMORY_LIMIT_MB="0")
    worker = HiveWorker(workdir / f"home-monitor-{limits}", srv.url, BENCH_CONFIG, 16, env=env)
    try:
        worker.wait_started(180)
        srv.enqueue("bench_sleep", {"seconds": window + 60}, 16)
        wait_for(lambda: srv.claimed_count() >= 16, 180, "16 busy executors")
        time.sleep(1.0)
        cpu0 = worker.cpu()
        started = time.perf_counter()
        time.sleep(window)
        used = worker.cpu() - cpu0
        return 100 * used / (time.perf_counter() - started)
    finally:
        worker.stop()
        srv.conn.execute("UPDATE tasks SET state = 'done' WHERE state != 'done'")


def measure(quick: bool) -> list[dict]:
    rounds = 6 if quick else 15
    window = 8.0 if quick else 20.0
    workdir = Path(tempfile.mkdtemp(prefix="hive-bench-limits-"))
    srv = DevServer(workdir)
    rows = []
    try:
        worker = HiveWorker(workdir / "home-reaction", srv.url, BENCH_CONFIG, 1,
                            env={"HIVE_TASK_MEMORY_LIMIT_MB": str(LIMIT_MB)})
        times, kinds = [], []
        try:
            worker.wait_started()
            for i in range(rounds):
                seconds, result = reaction_round(srv, worker.pid, LIMIT_MB * MB)
                times.append(seconds)
                kinds.append('"kind":"memory_limit"' in result.replace(" ", ""))
                log(f"limits: breach {i + 1}/{rounds}: tree dead {seconds * 1000:.0f} ms after crossing the limit")
        finally:
            worker.stop()
        # The supervisor logs how long each kill sweep took: the rest of the reaction is detection.
        logged = re.findall(r"killed its \d+ process\(es\) in (\d+) ms", (worker.home / "logs" / "worker.log")
                            .read_text(errors="replace")) if (worker.home / "logs" / "worker.log").exists() else []
        sweep = f"; the kill sweep itself took {median([float(x) for x in logged]):.0f} ms median" if logged else ""
        ok = f"{sum(kinds)}/{len(kinds)} results of kind memory_limit{sweep}"
        rows.append(row("5 limits", "reaction: memory breach -> whole tree dead, median", 1000 * median(times), "ms",
                        target="< 250 ms", met=median(times) < 0.25,
                        note=f"{rounds} breaches, LIMIT_CHECK_INTERVAL 0.1 s; {ok}"))
        rows.append(row("5 limits", "reaction: memory breach -> whole tree dead, max", 1000 * max(times), "ms",
                        target="< 250 ms", met=max(times) < 0.25))
        on = monitoring(srv, workdir, True, window)
        off = monitoring(srv, workdir, False, window)
        log(f"limits: supervisor CPU with 16 busy executors: {on:.2f}% limits on, {off:.2f}% off")
        scan, walk = per_check_costs()
        nprocs = sum(1 for name in os.listdir("/proc") if name.isdigit())
        rows.append(row("5 limits", "supervisor CPU, 16 busy executors, limits on", on, "% of a core", off,
                        "limits off", target="monitoring (on - off) < 2%", met=on - off < 2.0,
                        note=f"monitoring costs {on - off:.2f}% of a core"))
        rows.append(row("5 limits", "one check of one executor's tree (3 processes): TreeMonitor", walk * 1e6, "µs",
                        scan * 1e6, f"one full /proc scan (Snapshot, {nprocs} processes)", ratio=walk / scan,
                        note="the tree walk's cost grows with the executors' trees, the scan's with the machine"))
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> None:
    args = json_arg_parser(__doc__).parse_args()
    emit(measure(args.quick), args.json)


if __name__ == "__main__":
    main()
