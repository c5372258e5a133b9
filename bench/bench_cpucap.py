"""CPU_CAP_PERCENT: does the cap hold, and what does it cost?

    python bench/bench_cpucap.py [--quick] [--json]

For each setting (off, then 25/50/75 % of the machine) the real worker (pool = CPU
count, so uncapped it could take the whole machine) runs a queue of CPU-bound
bench_hash tasks (~0.2 s each). Once every executor is busy, this process reads the
executors' CPU time over a window (psutil, the executors run the tasks themselves)
and reports their share of the whole machine beside the setting, and the tasks
finished per second. Uncapped, the share shows what the other programs on this
shared machine left over; the cost of the cap is the throughput it takes away, which
should be the share it takes away and nothing more (the scheduler enforces it: the
supervisor does no work for it).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import orjson

from common import BENCH_CONFIG, CORES, DevServer, HiveWorker, cpu_seconds, emit, json_arg_parser, log, row, wait_for

ROUNDS = 20000  # ~0.2 s of sha256 per task on this machine's class of CPU


def throttling(how: str) -> tuple[int, int]:
    """(periods, throttled periods) of the executors' cgroup so far; (0, 0) without one."""
    if " in /" not in how:
        return 0, 0
    try:
        stat = dict(line.split() for line in (Path(how.rsplit(" in ", 1)[1]) / "cpu.stat").read_text().splitlines())
        return int(stat["nr_periods"]), int(stat["nr_throttled"])
    except (OSError, KeyError, ValueError):
        return 0, 0


def measure(workdir: Path, cap: float, window: float) -> tuple[float, float, str]:
    """(share of the machine in %, tasks per second, what enforced the cap and how often it bit)."""
    server = DevServer(workdir)
    worker = None
    try:
        server.enqueue("bench_hash", {"rounds": ROUNDS}, count=5000)
        worker = HiveWorker(workdir / "home", server.url, BENCH_CONFIG, CORES,
                            env={"HIVE_CPU_CAP_PERCENT": str(cap), "HIVE_LOG_LEVEL": "INFO"})
        worker.wait_started()
        wait_for(lambda: server.results() >= 2 * CORES, 120, "the pool to be busy")
        executors = worker.executors()
        how = "off"
        if cap:
            try:
                status = orjson.loads((workdir / "home" / "status.json").read_bytes())
                how = status["cpu_cap"]["enforced_by"] or f"NOT enforced: {status['cpu_cap']['not_enforced_because']}"
            except (OSError, ValueError, KeyError):
                how = "unknown"
        periods0, throttled0 = throttling(how)
        cpu0, done0, t0 = cpu_seconds(executors), server.results(), time.monotonic()
        time.sleep(window)
        cpu1, done1, t1 = cpu_seconds(executors), server.results(), time.monotonic()
        periods1, throttled1 = throttling(how)
        if periods1 > periods0:
            # Throttled in most periods: the cap is what limits. Rarely: the other programs are.
            how += f"; throttled in {100 * (throttled1 - throttled0) / (periods1 - periods0):.0f}% of CFS periods"
        return 100.0 * (cpu1 - cpu0) / ((t1 - t0) * CORES), (done1 - done0) / (t1 - t0), how
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def _run(cap: float, window: float) -> tuple[float, float, str]:
    workdir = Path(tempfile.mkdtemp(prefix="hive-bench-cpucap-"))
    try:
        share, rate, how = measure(workdir, cap, window)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log(f"cap {cap:g}%: executors used {share:.1f}% of the machine, {rate:.1f} tasks/s ({how})")
    return share, rate, how


def main() -> None:
    args = json_arg_parser(__doc__).parse_args()
    window = 4.0 if args.quick else 8.0
    rows = []
    for cap in (25.0, 50.0, 75.0):
        # Uncapped right before each capped run: on a shared machine what is left over drifts.
        free_share, free_rate, _ = _run(0.0, window)
        share, rate, how = _run(cap, window)
        reachable = min(cap, free_share)  # a cap above what the others leave cannot be reached
        rows.append(row("7 cpu cap", f"share at cpu_cap_percent={cap:g}", round(share, 1), "%", baseline=cap,
                        baseline_label="setting", target=f"<= {cap + 5:g} and >= {reachable - 5:.0f}",
                        met=reachable - 5 <= share <= cap + 5,
                        note=f"uncapped just before: {free_share:.1f}%; {how}"))
        # Throughput relative to uncapped against the share relative to uncapped: equal = no extra cost.
        rows.append(row("7 cpu cap", f"throughput at {cap:g}% vs uncapped", round(rate / free_rate, 3), "x",
                        baseline=round(share / free_share, 3), baseline_label="share vs uncapped",
                        note=f"{rate:.1f} vs {free_rate:.1f} tasks/s"))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
