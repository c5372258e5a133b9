"""Scaling: a CPU-bound task (~50 ms of sha256) through the real worker at pool 1, 2, 4 and 8.

    python bench/bench_scaling.py [--quick]

The task is bench_hash of bench/bench_tasks.py, registered by bench/bench_config.py
(`--config bench/bench_config.py`). Its size is calibrated in this process first
(rounds for ~50 ms), and the same call timed here is the baseline: the ideal
throughput at pool P is min(P, cores) / t_task. Executors run at normal priority
(like the calibration), everything else as shipped, end to end over HTTP against
the dev server; N tasks appear at once and the drain is timed to the last result.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

from bench_tasks import hash_work

from common import BENCH_CONFIG, CORES, DevServer, HiveWorker, emit, json_arg_parser, log, median, row, wait_for

TARGET_SECONDS = 0.05
SPAWN = multiprocessing.get_context("spawn")


def calibrate() -> tuple[int, float]:
    """(rounds for ~50 ms, median seconds of that call here)."""
    hash_work(200)
    t = []
    for _ in range(5):
        started = time.perf_counter()
        hash_work(2000)
        t.append(time.perf_counter() - started)
    rounds = max(1, round(2000 * TARGET_SECONDS / median(t)))
    t = []
    for _ in range(15):
        started = time.perf_counter()
        hash_work(rounds)
        t.append(time.perf_counter() - started)
    return rounds, median(t)


def measure(quick: bool) -> list[dict]:
    repeats = 1 if quick else 3
    seconds = 1.5 if quick else 3.0
    rounds, single = calibrate()
    log(f"scaling: {rounds} sha256 rounds take {single * 1000:.1f} ms here")
    workdir = Path(tempfile.mkdtemp(prefix="hive-bench-scaling-"))
    srv = DevServer(workdir)
    rows = []
    try:
        for pool in (1, 2, 4, 8):
            ideal = min(pool, CORES) / single
            n = max(2 * pool, round(seconds * ideal))
            worker = HiveWorker(workdir / f"home-{pool}", srv.url, BENCH_CONFIG, pool,
                                env={"HIVE_EXECUTOR_PRIORITY": "normal"})
            rates, sup = [], []
            try:
                worker.wait_started()
                base = srv.results()
                srv.enqueue("bench_hash", {"rounds": rounds}, pool)
                wait_for(lambda b=base, p=pool: srv.results() >= b + p, 120, "warm-up")
                for _ in range(repeats):
                    base = srv.results()
                    cpu0 = worker.cpu()
                    started = time.perf_counter()
                    srv.enqueue("bench_hash", {"rounds": rounds}, n)
                    wait_for(lambda b=base, k=n: srv.results() >= b + k, 600, "drain", 0.005)
                    wall = time.perf_counter() - started
                    rates.append(n / wall)
                    sup.append(100 * (worker.cpu() - cpu0) / wall)
            finally:
                worker.stop()
            rate = median(rates)
            log(f"scaling pool {pool}: {rate:.1f} tasks/s, ideal {ideal:.1f}, efficiency {rate / ideal:.0%}")
            rows.append(row("4 scaling", f"~50 ms CPU task, pool {pool} ({CORES} cores)", rate, "tasks/s", ideal,
                            f"ideal min(P,{CORES})/t_task", note=f"efficiency {rate / ideal:.0%}; supervisor uses "
                                                                   f"{median(sup):.0f}% of a core"))
        # What a plain pool reaches on this machine right now (other load included), at pool = cores.
        n = max(2 * CORES, round(seconds * CORES / single))
        with SPAWN.Pool(CORES) as mp_pool:
            mp_pool.map(hash_work, [rounds] * CORES, chunksize=1)
            mp_rates = []
            for _ in range(repeats):
                started = time.perf_counter()
                for r in [mp_pool.apply_async(hash_work, (rounds,)) for _ in range(n)]:
                    r.get(600)
                mp_rates.append(n / (time.perf_counter() - started))
        ours_at_cores = next(r for r in rows if r["measure"].endswith(f"pool {CORES} ({CORES} cores)"))
        rows.append(row("4 scaling", f"~50 ms CPU task, pool {CORES}: ours vs a plain pool", ours_at_cores["ours"],
                        "tasks/s", median(mp_rates), f"multiprocessing.Pool({CORES})",
                        note=f"plain pool efficiency {median(mp_rates) * single / CORES:.0%} (no HTTP, no limits)"))
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> None:
    args = json_arg_parser(__doc__).parse_args()
    emit(measure(args.quick), args.json)


if __name__ == "__main__":
    main()
