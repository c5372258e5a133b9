"""Dispatch: no-op tasks through supervisor -> executor -> supervisor vs the usual process pools.

    python bench/bench_dispatch.py [--quick]

Ours: supervisor.pool.pool.Pool driven directly (as supervisor/oneshot.py does, and as the
arbiter's loop does: dispatch to every idle slot, wait on the pipes, handle frames,
check limits, maintain), pool of 2, limits ON (the defaults of config.py), one task
per message, the echo task of tests/support/test_config.py. Recycling
(MAX_TASKS_PER_EXECUTOR) is off so a 2-second run is not dominated by respawns, and
executors run at normal priority like the baselines' processes (the default
below_normal only matters when other work competes for the CPU, as it may on a
shared benchmark machine).

Baselines, each with 2 processes started with the spawn context (ours always spawns;
fork would favour them on Linux only): multiprocessing.Pool.apply_async,
pebble.ProcessPool.schedule(timeout=60), billiard.Pool.apply_async and
concurrent.futures.ProcessPoolExecutor.submit, all tasks submitted at once (their
queues keep both processes busy). Payloads: a small dict, and a dict holding 10 KB.
Each repeat runs every contender back to back (order rotated); figures are medians
over repeats and ratios medians of the per-repeat ratios. One more row: ours with
limits off, i.e. what the limit checks cost per task.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from benchkit import TEST_CONFIG, emit, json_arg_parser, log, median, row

SMALL = {"a": 1, "b": "two", "c": [1, 2, 3]}
BIG = {"blob": "x" * 10240}
PROCS = 2
SPAWN = multiprocessing.get_context("spawn")


# ---- ours ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolApi:
    Pool: Any
    executor_init: Callable[..., dict[str, Any]]
    claim: Callable[[int, Any], Any]  # (task id, params) -> a Claim of an echo task


def pool_api() -> PoolApi:
    """The pool's entry points in the checkout first on sys.path.

    bench_revisions.py drives this class in an older checkout too: before the subpackages
    (df36acd and earlier) the pool was supervisor/pool.py, Claim lived in the claimer, Task
    (with a ``raw`` field) in the client and new_key in the outbox.
    """
    try:
        from supervisor.model import Claim, Task
        from supervisor.pool.pool import Pool, executor_init
        from supervisor.store.journal import new_key
    except ImportError:
        from supervisor.claimer import Claim
        from supervisor.client import Task
        from supervisor.outbox import new_key

        from supervisor.pool import Pool, executor_init
    extra = {"raw": {}} if "raw" in {f.name for f in fields(Task)} else {}

    def claim(task_id: int, params: Any) -> Any:
        return Claim(new_key(), Task(id=task_id, task_type="echo", params=params, **extra))

    return PoolApi(Pool, executor_init, claim)


class Ours:
    label = "ours (Pool, limits on)"

    def __init__(self, limits: bool = True, config: Path = TEST_CONFIG) -> None:
        from executor.registry import load_config
        from supervisor import settings as settings_mod

        self.api = pool_api()
        self.home = Path(tempfile.mkdtemp(prefix="hive-bench-dispatch-"))
        module = load_config(str(config))
        flags: dict[str, Any] = {"pool_size": PROCS, "task_error_sleep": 0.0, "max_tasks_per_executor": 0,
                                 "log_level": "WARNING", "executor_priority": "normal"}
        if not limits:
            flags.update(task_time_limit=0.0, task_cpu_limit=0.0, task_memory_limit_mb=0.0)
            self.label = "ours (Pool, limits off)"
        settings = settings_mod.load(module, self.home, flags, environ={})
        self.done = 0
        self.pool = self.api.Pool(PROCS, self.api.executor_init(settings, str(config), "bench"), settings,
                                  self._on_result)
        self.pool.start()
        self._drive(lambda: self.pool.ready_count(time.monotonic()) == PROCS, 120)

    def _on_result(self, claim, ok, raw, kind, seconds) -> None:
        if not ok:
            raise RuntimeError(f"echo failed: {raw[:200]!r}")
        self.done += 1

    def _drive(self, until: Callable[[], bool], timeout: float) -> None:
        pool = self.pool
        interval = pool.settings.limit_check_interval
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise RuntimeError("ours: timed out")
            pool.serve(interval)
            pool.check_limits()
            pool.maintain()

    def run(self, n: int, payload: dict) -> float:
        claim = self.api.claim
        pool = self.pool
        interval = pool.settings.limit_check_interval
        self.done = 0
        sent = 0
        started = time.perf_counter()
        while self.done < n:
            # The arbiter's turn: place claims on idle executors, wait, handle frames, check, maintain.
            while sent < n and pool.dispatch(claim(sent, payload)):
                sent += 1
            pool.serve(interval)
            pool.check_limits()
            pool.maintain()
        return n / (time.perf_counter() - started)

    def close(self) -> None:
        self.pool.stop()
        shutil.rmtree(self.home, ignore_errors=True)


# ---- baselines ---------------------------------------------------------------------------------------

class MpPool:
    label = "multiprocessing.Pool"

    def __init__(self) -> None:
        from bench_tasks import echo_plain

        self.fn = echo_plain
        self.pool = SPAWN.Pool(PROCS)
        self.run(50, SMALL)

    def run(self, n: int, payload: dict) -> float:
        started = time.perf_counter()
        pending = [self.pool.apply_async(self.fn, (payload,)) for _ in range(n)]
        for r in pending:
            r.get(60)
        return n / (time.perf_counter() - started)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


class Billiard(MpPool):
    label = "billiard.Pool"

    def __init__(self) -> None:
        import billiard
        from bench_tasks import echo_plain

        self.fn = echo_plain
        self.pool = billiard.get_context("spawn").Pool(PROCS)
        self.run(50, SMALL)


class Pebble:
    label = "pebble.ProcessPool (timeout)"

    def __init__(self) -> None:
        from bench_tasks import echo_plain
        from pebble import ProcessPool

        self.fn = echo_plain
        self.pool = ProcessPool(max_workers=PROCS, context=SPAWN)
        self.run(50, SMALL)

    def run(self, n: int, payload: dict) -> float:
        started = time.perf_counter()
        futures = [self.pool.schedule(self.fn, args=(payload,), timeout=60) for _ in range(n)]
        for f in futures:
            f.result()
        return n / (time.perf_counter() - started)

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()


class Futures:
    label = "ProcessPoolExecutor"

    def __init__(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        from bench_tasks import echo_plain

        self.fn = echo_plain
        self.pool = ProcessPoolExecutor(max_workers=PROCS, mp_context=SPAWN)
        self.run(50, SMALL)

    def run(self, n: int, payload: dict) -> float:
        started = time.perf_counter()
        futures = [self.pool.submit(self.fn, payload) for _ in range(n)]
        for f in futures:
            f.result()
        return n / (time.perf_counter() - started)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


# ---- the comparison ------------------------------------------------------------------------------------

def measure(quick: bool) -> list[dict]:
    logging.basicConfig(level=logging.WARNING)
    repeats = 3 if quick else 5
    seconds = 0.5 if quick else 1.2  # per contender, payload and repeat
    makers: list[Callable[[], Any]] = [Ours, lambda: Ours(limits=False), MpPool, Pebble, Billiard, Futures]
    labels = ["ours", "ours_nolimits", "mp", "pebble", "billiard", "futures"]
    rates: dict[str, dict[str, list[float]]] = {k: {"small": [], "10kb": []} for k in labels}
    sizes: dict[tuple[str, str], int] = {}
    for rep in range(repeats):
        order = list(range(len(makers)))
        shift = rep % len(order)
        order = order[shift:] + order[:shift]
        for i in order:
            key = labels[i]
            contender = makers[i]()
            try:
                for pname, payload in (("small", SMALL), ("10kb", BIG)):
                    n = sizes.get((key, pname))
                    if n is None:  # size each contender's run to about `seconds`
                        probe = contender.run(300, payload)
                        n = sizes[(key, pname)] = int(min(40000, max(300, probe * seconds)))
                    rates[key][pname].append(contender.run(n, payload))
            finally:
                contender.close()
        log(f"dispatch repeat {rep + 1}/{repeats}: " + ", ".join(
            f"{k} {rates[k]['small'][-1]:.0f}/{rates[k]['10kb'][-1]:.0f}" for k in labels))

    rows = []
    names = {"mp": "multiprocessing.Pool.apply_async", "pebble": "pebble.ProcessPool.schedule(timeout=)",
             "billiard": "billiard.Pool.apply_async", "futures": "ProcessPoolExecutor.submit"}
    for pname, what in (("small", "no-op, small dict"), ("10kb", "no-op, 10 KB payload")):
        ours = rates["ours"][pname]
        for base, label in names.items():
            ratios = [o / b for o, b in zip(ours, rates[base][pname], strict=True)]
            target, met = "", None
            if base == "mp":
                target, met = ">= 1.0x multiprocessing.Pool", median(ratios) >= 1.0
            rows.append(row("1 dispatch", f"{what}, pool of 2 (ours: limits on)", median(ours), "tasks/s",
                            median(rates[base][pname]), label, ratio=median(ratios), target=target, met=met))
        off = rates["ours_nolimits"][pname]
        rows.append(row("1 dispatch", f"{what}: ours, limits off", median(off), "tasks/s", median(ours),
                        "ours, limits on", ratio=median([a / b for a, b in zip(off, ours, strict=True)]),
                        note="what the limit checks cost per task"))
    return rows


def main() -> None:
    args = json_arg_parser(__doc__).parse_args()
    emit(measure(args.quick), args.json)


if __name__ == "__main__":
    main()
