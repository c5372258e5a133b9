"""The executor pool: slots of pre-started executors, dispatch, limits, crashes, respawn, recycling.

Everything here runs on the arbiter's thread; failures are per task (pebble's
model): the task whose executor crashed or broke a limit gets the failure, its
slot gets a fresh executor, the other slots never notice.
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

import orjson

from executor.conventions import failure
from supervisor.logs import Block
from supervisor.model import Claim
from supervisor.pool.executors import Executor, describe_exit
from supervisor.pool.proctree import TreeMonitor
from supervisor.safetext import loggable_block
from supervisor.settings import Settings

log = logging.getLogger("hive.pool")

START_TIMEOUT = 60.0  # an executor that is not ready by then is killed and retried
MAX_SPAWN_DELAY = 60.0
MB = 1024 * 1024
TRACEBACK_MAX_CHARS = 20000  # a task's exception text is its own: the log keeps the start of it
LOGGER_NAMES_MAX = 256  # distinct task logger names kept; each is a logging.Logger alive forever


@dataclass
class Running:
    claim: Claim
    seq: int
    dispatched: float  # monotonic
    limits: dict[str, float]
    cpu_base: float


@dataclass
class Slot:
    index: int
    executor: Executor | None = None
    generation: int = 0
    ready: bool = False
    running: Running | None = None
    tasks_done: int = 0
    max_tasks: int = 0
    pause_until: float = 0.0
    spawn_failures: int = 0
    next_spawn: float = 0.0
    retire: str | None = None  # reason to replace the executor once it is idle
    log_bytes: int = 0  # logged by its current (or last) task, against TASK_LOG_MAX_BYTES
    log_dropped: int = 0  # lines of that task dropped over the budget ...
    log_dropped_bytes: int = 0  # ... and their text

    def state(self, now: float) -> str:
        if self.executor is None:
            return "down"
        if not self.ready:
            return "starting"
        if self.running:
            return "busy"
        if self.pause_until > now:
            return "paused"
        return "idle"


def executor_init(settings: Settings, config_path: str | None, version: str, debug: bool = False) -> dict[str, Any]:
    """What every executor is started with (see executor.process.main)."""
    return {"config": config_path, "priority": settings.executor_priority, "debug": debug,
            "settings": dict(settings.values, worker_version=version),
            "result_max_bytes": settings.result_max_bytes}


# on_result(claim, ok, raw_result_json, kind, seconds)
ResultSink = Callable[[Claim, bool, bytes, str | None, float], None]


class Pool:
    def __init__(self, size: int, init: dict[str, Any], settings: Settings, on_result: ResultSink,
                 place: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        self.place = place  # every new executor goes through it (the CPU cap)
        self.init = init
        self.on_result = on_result
        self.slots = [Slot(i) for i in range(size)]
        self.seq = itertools.count(1)
        self.scratch_root = settings.home / "scratch"
        self.data_root = settings.home / "data"
        shutil.rmtree(self.scratch_root, ignore_errors=True)  # leftovers of a killed run
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random()
        self.last_measure = 0.0
        self.monitor = TreeMonitor()  # keeps /proc fds of the busy executors' trees between checks
        self.last_alive_check = 0.0
        self.logger_names: set[str] = set()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: Slot) -> None:
        slot.generation += 1
        slot.ready = False
        slot.retire = None
        limit = self.settings.max_tasks_per_executor
        # Jitter, so executors started together are not all recycled at the same moment.
        slot.max_tasks = max(1, round(limit * self.rng.uniform(0.9, 1.1))) if limit else 0
        slot.tasks_done = 0
        ex = Executor(slot.index, slot.generation, self.init, self.scratch_root / f"{slot.index}-{slot.generation}",
                      self.place)
        try:
            ex.start()
        except Exception as exc:  # noqa: BLE001 - e.g. out of handles: retry later, never crash
            slot.executor = None
            self._spawn_failed(slot, f"cannot start: {exc}")
            return
        slot.executor = ex
        log.debug("slot %d: executor started, pid %d", slot.index, ex.pid)

    def _spawn_failed(self, slot: Slot, why: str) -> None:
        slot.spawn_failures += 1
        delay = min(MAX_SPAWN_DELAY, 0.5 * 2 ** (slot.spawn_failures - 1))
        slot.next_spawn = time.monotonic() + delay
        log.error("slot %d: executor failed to start (%s); attempt %d, retrying in %.1f s",
                  slot.index, why, slot.spawn_failures, delay)

    def stop(self, grace: float = 2.0) -> None:
        for slot in self.slots:
            if slot.executor is not None:
                try:
                    slot.executor.send({"op": "stop"})
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + grace
        for slot in self.slots:
            ex = slot.executor
            if ex is not None and ex.process is not None:
                ex.process.join(max(0.0, deadline - time.monotonic()))
                ex.kill()
                slot.executor = None
        self.monitor.close()
        shutil.rmtree(self.scratch_root, ignore_errors=True)

    # ---- what the arbiter asks ---------------------------------------------------------

    def serve(self, timeout: float, extra: list[Any] | tuple[Any, ...] = ()) -> list[Any]:
        """Wait up to ``timeout`` for frames from executors and for ``extra`` objects; handle the
        frames; return the ``extra`` objects that are ready."""
        conns = {s.executor.conn: s for s in self.slots if s.executor is not None and s.executor.conn is not None}
        ready_extra = []
        try:
            ready = wait([*extra, *conns], timeout)
        except InterruptedError:
            # CPython's Windows wait() raises this when Ctrl+C arrives, after the SIGINT handler
            # has asked for a stop; POSIX retries the wait itself (PEP 475).
            return ready_extra
        for obj in ready:
            if obj in conns:
                self.handle(conns[obj])
            else:
                ready_extra.append(obj)
        return ready_extra

    def ready_count(self, now: float) -> int:
        return sum(1 for s in self.slots if s.state(now) == "idle" and not s.retire)

    def busy(self) -> list[Slot]:
        return [s for s in self.slots if s.running]

    def describe(self, now: float) -> list[dict[str, Any]]:
        out = []
        for s in self.slots:
            task = None
            if s.running:
                t = s.running.claim.task
                task = {"id": t.id, "task_type": t.task_type, "seconds": now - s.running.dispatched}
            out.append({"slot": s.index, "state": s.state(now), "tasks_done": s.tasks_done,
                        "pid": s.executor.pid if s.executor else None, "task": task})
        return out

    # ---- dispatch ----------------------------------------------------------------------------

    def dispatch(self, claim: Claim) -> bool:
        now = time.monotonic()
        slot = next((s for s in self.slots if s.state(now) == "idle" and not s.retire), None)
        if slot is None or slot.executor is None:
            return False
        task = claim.task
        seq = next(self.seq)
        limits = self.settings.limits_for(task.task_type)
        cpu_base = slot.executor.idle_cpu  # reported by the executor with its last frame
        msg = {"op": "run", "seq": seq, "id": task.id, "task_type": task.task_type, "params": task.params,
               "scratch": str(slot.executor.scratch), "data": str(self.data_root / _safe_name(task.task_type))}
        try:
            slot.executor.send(msg)
        except (OSError, ValueError) as exc:
            log.warning("slot %d: executor pipe broken before dispatch (%s)", slot.index, exc)
            self._executor_lost(slot, now)
            return False
        slot.running = Running(claim, seq, now, limits, cpu_base)
        slot.log_bytes = slot.log_dropped = slot.log_dropped_bytes = 0  # the budget is per task
        log.info("task %r (%s) started on slot %d (pid %d)", task.id, task.task_type, slot.index, slot.executor.pid)
        return True

    # ---- frames from executors ---------------------------------------------------------------

    def handle(self, slot: Slot) -> None:
        ex = slot.executor
        assert ex is not None
        try:
            while ex.conn is not None and ex.conn.poll():
                header, raw = ex.recv()
                self._frame(slot, header, raw)
                if slot.executor is not ex:
                    return
        except (EOFError, OSError):
            self._executor_lost(slot, time.monotonic())

    def _frame(self, slot: Slot, header: dict[str, Any], raw: bytes | None) -> None:
        op = header.get("op")
        ex = slot.executor
        assert ex is not None
        if op == "log":
            self._task_log(slot, header)
        elif op == "ready":
            slot.ready = True
            ex.ready_rss = header.get("rss", 0)
            ex.idle_cpu = header.get("cpu", 0.0)
            if slot.spawn_failures:
                log.info("slot %d: executor up again after %d failed start(s)", slot.index, slot.spawn_failures)
            slot.spawn_failures = 0
            log.debug("slot %d: executor pid %d ready in %.2f s", slot.index, ex.pid, time.monotonic() - ex.started_at)
        elif op == "import_error":
            log.error("slot %d: executor cannot import the task registry:\n    %s", slot.index,
                      _block(header.get("error", "")))
            ex.kill()
            slot.executor = None
            self._spawn_failed(slot, "task registry import failed")
        elif op == "done":
            running = slot.running
            if running is None or header.get("seq") != running.seq:
                log.warning("slot %d: result for an unknown dispatch %s ignored", slot.index, header.get("seq"))
                return
            slot.running = None
            slot.tasks_done += 1
            ex.idle_cpu = header.get("cpu", ex.idle_cpu)
            ok = bool(header.get("ok"))
            if header.get("traceback"):
                log.error("task %r raised:\n    %s", running.claim.task.id, _block(header["traceback"]))
            kind = None
            if not ok:
                try:
                    kind = orjson.loads(raw or b"{}").get("kind")
                except (orjson.JSONDecodeError, AttributeError):
                    kind = None
            self._finish(slot, running, ok, raw or b"null", kind)
            self._maybe_retire(slot, header.get("rss", 0))

    def _task_log(self, slot: Slot, header: dict[str, Any]) -> None:
        """A task's log line, within its TASK_LOG_MAX_BYTES: one task must not rotate away the log."""
        msg = str(header.get("msg", ""))
        task_id = header.get("task_id")
        budget = self.settings.task_log_max_bytes
        if budget:
            # A line's prefix (time, level, logger, task id) is ~100 bytes in the file: 1 MB is
            # then also at most ~10,000 lines, however short.
            slot.log_bytes += len(msg) + 100
            if slot.log_bytes > budget:
                slot.log_dropped += 1
                slot.log_dropped_bytes += len(msg)
                if slot.log_dropped == 1:
                    log.warning("task %r: logged over TASK_LOG_MAX_BYTES=%d; its further lines are dropped "
                                "(counted when it ends)", task_id, budget)
                return
        name = str(header.get("name", "task"))
        if name not in self.logger_names:
            if len(self.logger_names) >= LOGGER_NAMES_MAX or len(name) > 100:
                name = "task"
            self.logger_names.add(name)
        level = header.get("level", 20)
        prefix = f"task {task_id!r}: " if task_id is not None else f"slot {slot.index}: "
        logging.getLogger("hive." + name).log(level if isinstance(level, int) else 20, "%s%s", prefix, msg)

    def _finish(self, slot: Slot, running: Running, ok: bool, raw: bytes, kind: str | None) -> None:
        seconds = time.monotonic() - running.dispatched
        if slot.log_dropped:
            log.warning("task %r: %d log line(s) of %d bytes dropped over TASK_LOG_MAX_BYTES=%d",
                        running.claim.task.id, slot.log_dropped, slot.log_dropped_bytes,
                        self.settings.task_log_max_bytes)
        slot.log_bytes = slot.log_dropped = slot.log_dropped_bytes = 0
        self.on_result(running.claim, ok, raw, kind, seconds)
        pause = self.settings.task_error_sleep
        if not ok and pause > 0:
            slot.pause_until = time.monotonic() + pause
            log.info("slot %d: pausing %.0f s after a failed task (TASK_ERROR_SLEEP)", slot.index, pause)

    def _maybe_retire(self, slot: Slot, rss: int) -> None:
        ex = slot.executor
        if ex is None:
            return
        if slot.max_tasks and slot.tasks_done >= slot.max_tasks:
            slot.retire = f"ran {slot.tasks_done} tasks (MAX_TASKS_PER_EXECUTOR)"
        growth = self.settings.executor_memory_growth_mb
        if growth and rss and ex.ready_rss and rss - ex.ready_rss > growth * MB:
            slot.retire = (f"grew {(rss - ex.ready_rss) / MB:.0f} MB over its start-up size "
                           f"(EXECUTOR_MEMORY_GROWTH_MB={growth:g})")

    def _executor_lost(self, slot: Slot, now: float) -> None:
        ex = slot.executor
        if ex is None:
            return
        if ex.process is not None:
            ex.process.join(1.0)
        code = ex.exitcode()
        ex.kill()  # its descendants may live on; take them down too
        slot.executor = None
        how = describe_exit(code)
        if slot.running is not None:
            running = slot.running
            slot.running = None
            task = running.claim.task
            log.error("task %r (%s) crashed its executor on slot %d (%s); starting a fresh executor",
                      task.id, task.task_type, slot.index, how)
            self._finish(slot, running, False, orjson.dumps(failure(f"executor crashed: {how}", "crashed")), "crashed")
            self._spawn(slot)
        elif not slot.ready:
            self._spawn_failed(slot, f"died during start-up, {how}")
        else:
            log.error("slot %d: idle executor died (%s); starting a fresh one", slot.index, how)
            self._spawn(slot)

    # ---- periodic work -------------------------------------------------------------------------

    def check_limits(self) -> None:
        """Time limits every loop turn (free); memory and CPU every LIMIT_CHECK_INTERVAL, reading
        only the busy executors' trees (proctree.TreeMonitor)."""
        busy = [s for s in self.slots if s.running and s.executor is not None]
        if not busy:
            return
        now = time.monotonic()
        measure = now - self.last_measure >= self.settings.limit_check_interval
        if measure:
            self.last_measure = now
            self.monitor.retain(s.executor.pid for s in busy if s.executor is not None)  # idle or gone: close fds
        for slot in busy:
            running = slot.running
            assert running is not None and slot.executor is not None
            limits = running.limits
            breach = None
            elapsed = now - running.dispatched
            if limits["time"] and elapsed > limits["time"]:
                breach = ("time_limit", f"time limit of {limits['time']:g} s reached ({elapsed:.1f} s wall time)")
            elif measure and (limits["memory_mb"] or limits["cpu"]):
                usage = self.monitor.usage(slot.executor.pid)
                cpu = usage.cpu - running.cpu_base
                if limits["memory_mb"] and usage.rss > limits["memory_mb"] * MB:
                    breach = ("memory_limit", f"memory limit of {limits['memory_mb']:g} MB reached "
                              f"({usage.rss / MB:.0f} MB in {len(usage.pids)} process(es))")
                elif limits["cpu"] and cpu > limits["cpu"]:
                    breach = ("cpu_limit", f"CPU limit of {limits['cpu']:g} s reached ({cpu:.1f} s CPU "
                              f"in {len(usage.pids)} process(es))")
            if breach:
                self._kill_for(slot, *breach)

    def _kill_for(self, slot: Slot, kind: str, text: str) -> None:
        ex = slot.executor
        running = slot.running
        assert ex is not None and running is not None
        task = running.claim.task
        started = time.monotonic()
        count = ex.kill()
        slot.executor = None
        slot.running = None
        log.warning("task %r (%s) on slot %d: %s; killed its %d process(es) in %.0f ms; starting a fresh executor",
                    task.id, task.task_type, slot.index, text, count, (time.monotonic() - started) * 1000)
        self._finish(slot, running, False, orjson.dumps(failure(text, kind)), kind)
        self._spawn(slot)

    def maintain(self) -> None:
        now = time.monotonic()
        # An executor's end shows as EOF on its pipe, except when a process it forked still holds
        # the pipe (and multiprocessing's sentinel): so also ask the OS, every LIMIT_CHECK_INTERVAL.
        check_alive = now - self.last_alive_check >= self.settings.limit_check_interval
        if check_alive:
            self.last_alive_check = now
        for slot in self.slots:
            ex = slot.executor
            if ex is None:
                if now >= slot.next_spawn:
                    self._spawn(slot)
                continue
            if not slot.ready and now - ex.started_at > START_TIMEOUT:
                ex.kill()
                slot.executor = None
                self._spawn_failed(slot, f"not ready after {START_TIMEOUT:.0f} s")
                continue
            if check_alive and not ex.alive():
                self.handle(slot)  # what it sent before it ended
                if slot.executor is ex:
                    self._executor_lost(slot, now)
                continue
            if slot.retire and not slot.running and slot.ready:
                log.info("slot %d: recycling executor pid %d: %s", slot.index, ex.pid, slot.retire)
                ex.stop(timeout=1.0)
                slot.executor = None
                self._spawn(slot)

    def retire_all(self, reason: str) -> None:
        """Replace every executor as soon as it is idle (dev reload)."""
        for slot in self.slots:
            if slot.executor is not None:
                slot.retire = reason

    def kill_running(self, reason: str) -> list[Claim]:
        """Kill every busy executor at once (forced shutdown); their claims stay in the journal."""
        claims = []
        for slot in self.slots:
            if slot.running and slot.executor is not None:
                claims.append(slot.running.claim)
                log.warning("task %r (%s) on slot %d killed: %s", slot.running.claim.task.id,
                            slot.running.claim.task.task_type, slot.index, reason)
                slot.executor.kill()
                slot.executor = None
                slot.running = None
        return claims


def _block(text: str) -> Block:
    """An executor's traceback for the log: readable on its lines, escaped, bounded."""
    if len(text) > TRACEBACK_MAX_CHARS:
        text = text[:TRACEBACK_MAX_CHARS] + f"\n... ({len(text) - TRACEBACK_MAX_CHARS} more characters)"
    return Block(loggable_block(text))


def _safe_name(task_type: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task_type) or "_"
