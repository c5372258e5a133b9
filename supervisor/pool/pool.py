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
from multiprocessing.connection import wait
from typing import Any, ClassVar

from common.proctree import TreeMonitor
from common.safetext import loggable_block
from common.vocabulary import FailureKind, failure_json
from executor.protocol import Done, ImportFailed, Log, ProtocolError, Ready, Run, Stop
from supervisor.host.frozen import exit_if_unpacked_gone
from supervisor.host.logs import TASK_LINE, Block
from supervisor.model import Claim
from supervisor.pool.executors import Executor, describe_exit
from supervisor.pool.limits import MB, Measured, breach
from supervisor.pool.slots import Running, Slot, SlotState
from supervisor.settings import Settings

log = logging.getLogger("hive.pool")

START_TIMEOUT = 60.0  # an executor that is not ready by then is killed and retried
MAX_SPAWN_DELAY = 60.0
TRACEBACK_MAX_CHARS = 20000  # a task's exception text is its own: the log keeps the start of it
LOGGER_NAMES_MAX = 256  # distinct task logger names kept; each is a logging.Logger alive forever


def executor_init(settings: Settings, config_path: str | None, version: str, debug: bool = False) -> dict[str, Any]:
    """What every executor is started with (see executor.process.main)."""
    return {"config": config_path, "priority": settings.executor_priority, "debug": debug,
            "settings": dict(settings.values, worker_version=version),
            "result_max_bytes": settings.result_max_bytes}


# on_result(claim, ok, raw_result_json, kind, seconds)
ResultSink = Callable[[Claim, bool, bytes, FailureKind | None, float], None]


class Pool:
    def __init__(self, size: int, init: dict[str, Any], settings: Settings, on_result: ResultSink,
                 place: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        self.place = place  # every new executor goes through it (the CPU cap)
        self.init = init
        self.on_result = on_result
        self.slots = [Slot(i) for i in range(size)]
        self.last_start_error = ""  # why the last executor failed to start (the arbiter names it)
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
        # A temp cleaner took the one-file bundle: no executor can start from it (on Windows one may
        # hang until START_TIMEOUT), so a restart of the worker helps, retries do not. Checked before
        # every start, retries included (a few stat calls; executors start rarely).
        exit_if_unpacked_gone()
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
        self.last_start_error = why
        slot.spawn_failures += 1
        delay = min(MAX_SPAWN_DELAY, 0.5 * 2 ** (slot.spawn_failures - 1))
        slot.next_spawn = time.monotonic() + delay
        log.error("slot %d: executor failed to start (%s); attempt %d, retrying in %.1f s",
                  slot.index, why, slot.spawn_failures, delay)

    def stop(self, grace: float = 2.0) -> None:
        for slot in self.slots:
            if slot.executor is not None:
                try:
                    slot.executor.send(Stop())
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
        return sum(1 for s in self.slots if s.takes_work(now))

    def any_up(self, now: float) -> bool:
        """Whether any executor has started (idle, busy or pausing), as opposed to all down or starting."""
        return any(s.state(now) in (SlotState.IDLE, SlotState.BUSY, SlotState.PAUSED) for s in self.slots)

    def busy(self) -> list[Slot]:
        return [s for s in self.slots if s.running]

    def describe(self, now: float) -> list[dict[str, Any]]:
        out = []
        for s in self.slots:
            task = None
            if s.running:
                t = s.running.claim.task
                task = {"id": t.id, "task_type": t.task_type, "seconds": now - s.running.dispatched}
            out.append({"slot": s.index, "state": s.state(now), "tasks_done": s.tasks_total,
                        "pid": s.executor.pid if s.executor else None, "task": task,
                        "paused_seconds_left": max(0.0, s.pause_until - now) or None})
        return out

    # ---- dispatch ----------------------------------------------------------------------------

    def dispatch(self, claim: Claim) -> bool:
        now = time.monotonic()
        slot = next((s for s in self.slots if s.takes_work(now)), None)
        if slot is None or slot.executor is None:
            return False
        task = claim.task
        seq = next(self.seq)
        limits = self.settings.limits_for(task.task_type)
        cpu_base = slot.executor.idle_cpu  # reported by the executor with its last frame
        run = Run(seq, task.id, task.task_type, task.params, str(slot.executor.scratch),
                  str(self.data_root / _safe_name(task.task_type)))
        try:
            slot.executor.send(run)
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
                try:
                    frame = ex.recv()
                except ProtocolError as exc:
                    log.error("slot %d: executor pid %d sent a frame this worker cannot read (%s); dropped",
                              slot.index, ex.pid, exc)
                    continue
                self._on_frame[type(frame)](self, slot, ex, frame)
                if slot.executor is not ex:
                    return
        except (EOFError, OSError):
            self._executor_lost(slot, time.monotonic())

    def _ready(self, slot: Slot, ex: Executor, frame: Ready) -> None:
        slot.ready = True
        ex.ready_rss = frame.rss
        ex.idle_cpu = frame.cpu
        if slot.spawn_failures:
            log.info("slot %d: executor up again after %d failed start(s)", slot.index, slot.spawn_failures)
        slot.spawn_failures = 0
        log.debug("slot %d: executor pid %d ready in %.2f s", slot.index, ex.pid, time.monotonic() - ex.started_at)

    def _import_failed(self, slot: Slot, ex: Executor, frame: ImportFailed) -> None:
        log.error("slot %d: executor cannot import the task registry:\n    %s", slot.index, _block(frame.error))
        ex.kill()
        slot.executor = None
        self._spawn_failed(slot, "task registry import failed")

    def _done(self, slot: Slot, ex: Executor, frame: Done) -> None:
        running = slot.running
        if running is None or frame.seq != running.seq:
            log.warning("slot %d: result for an unknown dispatch %s ignored", slot.index, frame.seq)
            return
        slot.running = None
        slot.tasks_done += 1
        slot.tasks_total += 1
        ex.idle_cpu = frame.cpu
        if frame.traceback:
            log.error("task %r raised:\n    %s", running.claim.task.id, _block(frame.traceback))
        self._finish(slot, running, frame.ok, frame.result, frame.kind)
        self._maybe_retire(slot, frame.rss)

    def _task_log(self, slot: Slot, ex: Executor, frame: Log) -> None:
        """A task's log line, within its TASK_LOG_MAX_BYTES: one task must not rotate away the log."""
        msg = frame.msg
        task_id = frame.task_id
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
        name = frame.name
        if name not in self.logger_names:
            if len(self.logger_names) >= LOGGER_NAMES_MAX or len(name) > 100:
                name = "task"
            self.logger_names.add(name)
        prefix = f"task {task_id!r}: " if task_id is not None else f"slot {slot.index}: "
        # Marked as a task's line: --dev's console shows a task's DEBUG lines, not the supervisor's.
        logging.getLogger("hive." + name).log(frame.level, "%s%s", prefix, msg, extra={TASK_LINE: True})

    # What each frame from an executor does; decode_from_executor yields only these types.
    _on_frame: ClassVar[dict[type, Callable[..., None]]] = {
        Log: _task_log, Ready: _ready, ImportFailed: _import_failed, Done: _done}

    def _finish(self, slot: Slot, running: Running, ok: bool, raw: bytes, kind: FailureKind | None) -> None:
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
            self._finish(slot, running, False, failure_json(f"executor crashed: {how}", FailureKind.CRASHED),
                         FailureKind.CRASHED)
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
            broken = breach(running.limits, now - running.dispatched,
                            self._measurer(slot.executor.pid, running.cpu_base) if measure else None)
            if broken:
                self._kill_for(slot, *broken)

    def _measurer(self, pid: int, cpu_base: float) -> Callable[[], Measured]:
        def measure() -> Measured:
            usage = self.monitor.usage(pid)
            return Measured(usage.rss, usage.cpu - cpu_base, len(usage.pids))
        return measure

    def _kill_for(self, slot: Slot, kind: FailureKind, text: str) -> None:
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
        self._finish(slot, running, False, failure_json(text, kind), kind)
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

    def clear_pauses(self, reason: str) -> None:
        """End every slot's TASK_ERROR_SLEEP now (dev reload: the failure may be what was fixed)."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.pause_until > now:
                log.info("slot %d: pause after a failed task ended (%.0f s early): %s", slot.index,
                         slot.pause_until - now, reason)
            slot.pause_until = 0.0

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
