"""The executor pool: slots of pre-started executors, dispatch, limits, crashes, respawn, recycling.

Everything here runs on the arbiter's thread; failures are per task (pebble's
model): the task whose executor crashed or broke a limit gets the failure, its
slot gets a fresh executor, the other slots never notice.

The pool decides when a slot changes; slots.py's named transitions make each change. Its
parts come in from outside: what starts an executor (executors.StartExecutor), what measures
a busy tree (TreeMeasurer) and the clock, so tests run it without a process
(tests/support/fake_executor.py).
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait
from typing import Any, ClassVar, Protocol

from common.proctree import TreeMonitor, Usage
from common.safetext import loggable_block
from common.vocabulary import FailureKind, failure_json
from executor.protocol import Done, ImportFailed, Log, ProtocolError, Ready, Run, Stop
from supervisor.host.frozen import exit_if_unpacked_gone
from supervisor.host.logs import TASK_LINE, Block
from supervisor.model import Claim
from supervisor.pool.executors import ExecutorHandle, StartExecutor, describe_exit, start_executor
from supervisor.pool.limits import Measured, breach
from supervisor.pool.slots import Running, Slot, SlotState, retire_reason
from supervisor.settings import Settings

log = logging.getLogger("hive.pool")

START_TIMEOUT = 60.0  # an executor that is not ready by then is killed and retried
TRACEBACK_MAX_CHARS = 20000  # a task's exception text is its own: the log keeps the start of it
LOGGER_NAMES_MAX = 256  # distinct task logger names kept; each is a logging.Logger alive forever


def executor_init(settings: Settings, config_path: str | None, version: str, debug: bool = False) -> dict[str, Any]:
    """What every executor is started with (see executor.process.main)."""
    return {"config": config_path, "priority": settings.executor_priority, "debug": debug,
            "settings": dict(settings.values, worker_version=version),
            "result_max_bytes": settings.result_max_bytes}


# on_result(claim, ok, raw_result_json, kind, seconds)
ResultSink = Callable[[Claim, bool, bytes, FailureKind | None, float], None]


class TreeMeasurer(Protocol):
    """Reads busy executors' process trees (common.proctree.TreeMonitor)."""

    def retain(self, roots: Iterable[int]) -> None:
        """Keeps what it holds for these roots only (the busy executors)."""
        ...

    def usage(self, root: int) -> Usage: ...

    def close(self) -> None: ...


class Pool:
    def __init__(self, size: int, init: dict[str, Any], settings: Settings, on_result: ResultSink,
                 place: Callable[[int], None] | None = None, *, start: StartExecutor | None = None,
                 monitor: TreeMeasurer | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """``start``, ``monitor`` and ``clock`` default to the real ones: an executor process
        (``init`` and ``place`` go to it), a TreeMonitor and time.monotonic."""
        self.settings = settings
        self.on_result = on_result
        # ``place``: every new executor goes through it (the CPU cap); the default starter holds it.
        self.start_executor = start or start_executor(init, place)
        self.clock = clock
        self.slots = [Slot(i) for i in range(size)]
        self.last_start_error = ""  # why the last executor failed to start (the arbiter names it)
        self.seq = itertools.count(1)
        self.scratch_root = settings.home / "scratch"
        self.data_root = settings.home / "data"
        shutil.rmtree(self.scratch_root, ignore_errors=True)  # leftovers of a killed run
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random()
        self.last_measure = 0.0
        self.monitor: TreeMeasurer = monitor or TreeMonitor()  # keeps /proc fds of the busy executors' trees between checks
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
        limit = self.settings.max_tasks_per_executor
        # Jitter, so executors started together are not all recycled at the same moment.
        generation = slot.launch(max(1, round(limit * self.rng.uniform(0.9, 1.1))) if limit else 0)
        try:
            ex = self.start_executor(slot.index, generation, self.scratch_root / f"{slot.index}-{generation}")
        except Exception as exc:  # noqa: BLE001 - e.g. out of handles: retry later, never crash
            self._spawn_failed(slot, f"cannot start: {exc}")
            return
        slot.started(ex, self.clock())

    def _spawn_failed(self, slot: Slot, why: str) -> None:
        self.last_start_error = why
        slot.start_failed(why, self.clock())

    def stop(self, grace: float = 2.0) -> None:
        for slot in self.slots:
            if slot.executor is not None:
                try:
                    slot.executor.send(Stop())
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + grace  # real time: it waits for processes
        for slot in self.slots:
            ex = slot.executor
            if ex is not None:
                ex.join(max(0.0, deadline - time.monotonic()))
                ex.kill()
                slot.stopped()
        self.monitor.close()
        shutil.rmtree(self.scratch_root, ignore_errors=True)

    # ---- what the arbiter asks ---------------------------------------------------------

    def serve(self, timeout: float, extra: list[Any] | tuple[Any, ...] = ()) -> list[Any]:
        """Wait up to ``timeout`` for frames from executors and for ``extra`` objects; handle the
        frames; return the ``extra`` objects that are ready."""
        conns = {s.executor.conn: s for s in self.slots if s.executor is not None and s.executor.conn is not None}
        ready_extra: list[Any] = []
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
        now = self.clock()
        slot = next((s for s in self.slots if s.takes_work(now)), None)
        if slot is None or slot.executor is None:
            return False
        task = claim.task
        seq = next(self.seq)
        limits = self.settings.limits_for(task.task_type)
        cpu_base = slot.idle_cpu  # reported by the executor with its last frame
        run = Run(seq, task.id, task.task_type, task.params, str(slot.executor.scratch),
                  str(self.data_root / _safe_name(task.task_type)))
        try:
            slot.executor.send(run)
        except (OSError, ValueError) as exc:
            log.warning("slot %d: executor pipe broken before dispatch (%s)", slot.index, exc)
            self._executor_lost(slot, now)
            return False
        slot.dispatched(Running(claim, seq, now, limits, cpu_base))
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
            self._executor_lost(slot, self.clock())

    def _ready(self, slot: Slot, ex: ExecutorHandle, frame: Ready) -> None:
        slot.became_ready(frame.rss, frame.cpu, self.clock())

    def _import_failed(self, slot: Slot, ex: ExecutorHandle, frame: ImportFailed) -> None:
        log.error("slot %d: executor cannot import the task registry:\n    %s", slot.index, _block(frame.error))
        ex.kill()
        self._spawn_failed(slot, "task registry import failed")

    def _done(self, slot: Slot, ex: ExecutorHandle, frame: Done) -> None:
        running = slot.running
        if running is None or frame.seq != running.seq:
            log.warning("slot %d: result for an unknown dispatch %s ignored", slot.index, frame.seq)
            return
        slot.finished(frame.cpu)
        if frame.traceback:
            log.error("task %r raised:\n    %s", running.claim.task.id, _block(frame.traceback))
        self._finish(slot, running, frame.ok, frame.result, frame.kind)
        self._maybe_retire(slot, frame.rss)

    def _task_log(self, slot: Slot, ex: ExecutorHandle, frame: Log) -> None:
        """A task's log line, within its TASK_LOG_MAX_BYTES: one task must not rotate away the log."""
        msg = frame.msg
        task_id = frame.task_id
        budget = self.settings.task_log_max_bytes
        # Each line's ~100-byte prefix counts too (Slot.charge_log): 1 MB is then also at most
        # ~10,000 lines, however short.
        if budget and not slot.charge_log(len(msg), budget):
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
        seconds = self.clock() - running.dispatched
        dropped, dropped_bytes = slot.end_log_budget()
        if dropped:
            log.warning("task %r: %d log line(s) of %d bytes dropped over TASK_LOG_MAX_BYTES=%d",
                        running.claim.task.id, dropped, dropped_bytes, self.settings.task_log_max_bytes)
        self.on_result(running.claim, ok, raw, kind, seconds)
        pause = self.settings.task_error_sleep
        if not ok and pause > 0:
            slot.pause(pause, self.clock())

    def _maybe_retire(self, slot: Slot, rss: int) -> None:
        if slot.executor is None:
            return
        why = retire_reason(slot.tasks_done, slot.max_tasks, rss, slot.ready_rss,
                            self.settings.executor_memory_growth_mb)
        if why:  # otherwise a reason already given (a dev reload) stands
            slot.retire_when_idle(why)

    def _executor_lost(self, slot: Slot, now: float) -> None:
        ex = slot.executor
        if ex is None:
            return
        ex.join(1.0)
        code = ex.exitcode()
        ex.kill()  # its descendants may live on; take them down too
        how = describe_exit(code)
        if slot.running is None and not slot.ready:
            self._spawn_failed(slot, f"died during start-up, {how}")
            return
        running = slot.crashed(how)
        if running is not None:
            self._finish(slot, running, False, failure_json(f"executor crashed: {how}", FailureKind.CRASHED),
                         FailureKind.CRASHED)
        self._spawn(slot)

    # ---- periodic work -------------------------------------------------------------------------

    def check_limits(self) -> None:
        """Time limits every loop turn (free); memory and CPU every LIMIT_CHECK_INTERVAL, reading
        only the busy executors' trees (proctree.TreeMonitor)."""
        busy = [s for s in self.slots if s.running and s.executor is not None]
        if not busy:
            return
        now = self.clock()
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
        assert ex is not None and slot.running is not None
        started = time.monotonic()  # real time: how long the kill took
        count = ex.kill()
        running = slot.killed_for_limit(text, count, (time.monotonic() - started) * 1000)
        self._finish(slot, running, False, failure_json(text, kind), kind)
        self._spawn(slot)

    def maintain(self) -> None:
        now = self.clock()
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
            if not slot.ready and now - slot.started_at > START_TIMEOUT:
                ex.kill()
                self._spawn_failed(slot, f"not ready after {START_TIMEOUT:.0f} s")
                continue
            if check_alive and not ex.alive():
                self.handle(slot)  # what it sent before it ended
                if slot.executor is ex:
                    self._executor_lost(slot, now)
                continue
            if slot.retire and not slot.running and slot.ready:
                slot.recycled()
                ex.stop(timeout=1.0)
                self._spawn(slot)

    def clear_pauses(self, reason: str) -> None:
        """End every slot's TASK_ERROR_SLEEP now (dev reload: the failure may be what was fixed)."""
        now = self.clock()
        for slot in self.slots:
            slot.end_pause(reason, now)

    def retire_all(self, reason: str) -> None:
        """Replace every executor as soon as it is idle (dev reload)."""
        for slot in self.slots:
            if slot.executor is not None:
                slot.retire_when_idle(reason)

    def kill_running(self, reason: str) -> list[Claim]:
        """Kill every busy executor at once (forced shutdown); their claims stay in the journal."""
        claims = []
        for slot in self.slots:
            ex = slot.executor
            if slot.running and ex is not None:
                claims.append(slot.running.claim)
                slot.killed_at_shutdown(reason)  # logged before the kill, as before: the kill takes time
                ex.kill()
        return claims


def _block(text: str) -> Block:
    """An executor's traceback for the log: readable on its lines, escaped, bounded."""
    if len(text) > TRACEBACK_MAX_CHARS:
        text = text[:TRACEBACK_MAX_CHARS] + f"\n... ({len(text) - TRACEBACK_MAX_CHARS} more characters)"
    return Block(loggable_block(text))


def _safe_name(task_type: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task_type) or "_"
