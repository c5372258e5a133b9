"""A pool slot: what it holds, what it runs, its state, and the named transitions that change it.

The state is derived from the fields (no stored state to disagree with them), and only the
transitions below write those fields: pool.py decides *when* a slot changes, this module says
*what* each change is and logs it. No processes here; ``now`` comes from the caller's clock.

    DOWN --launch, started--> STARTING --became_ready--> IDLE --dispatched--> BUSY --finished--> IDLE
    STARTING --start_failed (no Ready, import failure, start timeout, died)--> DOWN, retried at next_spawn
    BUSY --crashed | killed_for_limit | killed_at_shutdown--> DOWN (the task fails, a fresh executor starts)
    IDLE --crashed | recycled | stopped--> DOWN
    IDLE --pause (TASK_ERROR_SLEEP)--> PAUSED --time passes, or end_pause--> IDLE
    any --retire_when_idle--> (takes no work; recycled once IDLE)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from supervisor.pool.limits import MB

if TYPE_CHECKING:
    from supervisor.model import Claim
    from supervisor.pool.executors import ExecutorHandle

# The pool's logger: the lines are the pool's, whichever module writes them.
log = logging.getLogger("hive.pool")

MAX_SPAWN_DELAY = 60.0


class SlotState(StrEnum):
    """As status.json and the status command show it."""

    DOWN = "down"  # no executor: it failed to start or died, a new one is due at next_spawn
    STARTING = "starting"  # started, not ready yet (importing the registry)
    BUSY = "busy"
    PAUSED = "paused"  # TASK_ERROR_SLEEP after a failed task
    IDLE = "idle"


@dataclass
class Running:
    claim: Claim
    seq: int
    dispatched: float  # monotonic
    limits: dict[str, float]
    cpu_base: float


def spawn_delay(failures: int) -> float:
    """Backoff after the ``failures``-th failed start in a row: 0.5 s, doubling, at most MAX_SPAWN_DELAY."""
    # The exponent is bounded: 2**1024 overflows a float, which ~1030 failed starts in a row (17 h
    # of an executor that cannot start) would reach, and raise in the supervision loop.
    return min(MAX_SPAWN_DELAY, 0.5 * 2 ** min(failures - 1, 32))


def retire_reason(tasks_done: int, max_tasks: int, rss: int, ready_rss: int, growth_mb: float) -> str | None:
    """Why an executor should be replaced once idle, after a task: it ran its MAX_TASKS_PER_EXECUTOR,
    or its memory grew over EXECUTOR_MEMORY_GROWTH_MB since it was ready (growth is named first)."""
    if growth_mb and rss and ready_rss and rss - ready_rss > growth_mb * MB:
        return f"grew {(rss - ready_rss) / MB:.0f} MB over its start-up size (EXECUTOR_MEMORY_GROWTH_MB={growth_mb:g})"
    if max_tasks and tasks_done >= max_tasks:
        return f"ran {tasks_done} tasks (MAX_TASKS_PER_EXECUTOR)"
    return None


@dataclass
class Slot:
    index: int
    executor: ExecutorHandle | None = None
    generation: int = 0
    ready: bool = False
    running: Running | None = None
    tasks_done: int = 0  # by its current executor (recycling counts these)
    tasks_total: int = 0  # by the slot since the worker started, whatever its executors (status)
    max_tasks: int = 0
    pause_until: float = 0.0
    spawn_failures: int = 0
    next_spawn: float = 0.0
    retire: str | None = None  # reason to replace the executor once it is idle
    started_at: float = 0.0  # when its current executor started (the start timeout counts from it)
    ready_rss: int = 0  # its executor's size when ready: the base of EXECUTOR_MEMORY_GROWTH_MB
    idle_cpu: float = 0.0  # CPU seconds of its executor's tree when it last went idle (its own report)
    log_bytes: int = 0  # logged by its current (or last) task, against TASK_LOG_MAX_BYTES
    log_dropped: int = 0  # lines of that task dropped over the budget ...
    log_dropped_bytes: int = 0  # ... and their text

    def state(self, now: float) -> SlotState:
        if self.executor is None:
            return SlotState.DOWN
        if not self.ready:
            return SlotState.STARTING
        if self.running:
            return SlotState.BUSY
        if self.pause_until > now:
            return SlotState.PAUSED
        return SlotState.IDLE

    def takes_work(self, now: float) -> bool:
        """Idle and not about to be recycled: a task may be dispatched to it now."""
        return self.state(now) is SlotState.IDLE and not self.retire

    # ---- starting ----------------------------------------------------------------------------

    def launch(self, max_tasks: int) -> int:
        """DOWN, before its next executor starts: a new generation (it names the executor's tree
        token and scratch folder, so it advances even when the start fails) with fresh counts."""
        self.generation += 1
        self.ready = False
        self.retire = None
        self.max_tasks = max_tasks
        self.tasks_done = 0
        self.ready_rss = 0
        self.idle_cpu = 0.0
        return self.generation

    def started(self, executor: ExecutorHandle, now: float) -> None:
        """DOWN -> STARTING."""
        self.executor = executor
        self.started_at = now
        log.debug("slot %d: executor started, pid %d", self.index, executor.pid)

    def start_failed(self, why: str, now: float) -> float:
        """STARTING (or a start that raised) -> DOWN until next_spawn; returns the delay."""
        self.executor = None
        self.spawn_failures += 1
        delay = spawn_delay(self.spawn_failures)
        self.next_spawn = now + delay
        log.error("slot %d: executor failed to start (%s); attempt %d, retrying in %.1f s",
                  self.index, why, self.spawn_failures, delay)
        return delay

    def became_ready(self, rss: int, cpu: float, now: float) -> None:
        """STARTING -> IDLE (its Ready frame)."""
        self.ready = True
        self.ready_rss = rss
        self.idle_cpu = cpu
        if self.spawn_failures:
            log.info("slot %d: executor up again after %d failed start(s)", self.index, self.spawn_failures)
        self.spawn_failures = 0
        pid = self.executor.pid if self.executor is not None else 0
        log.debug("slot %d: executor pid %d ready in %.2f s", self.index, pid, now - self.started_at)

    # ---- running a task ----------------------------------------------------------------------

    def dispatched(self, running: Running) -> None:
        """IDLE -> BUSY."""
        self.running = running
        self.log_bytes = self.log_dropped = self.log_dropped_bytes = 0  # the budget is per task
        task = running.claim.task
        pid = self.executor.pid if self.executor is not None else 0
        log.info("task %r (%s) started on slot %d (pid %d)", task.id, task.task_type, self.index, pid)

    def finished(self, cpu: float) -> None:
        """BUSY -> IDLE (its Done frame); ``cpu`` is the next task's CPU baseline."""
        self.running = None
        self.tasks_done += 1
        self.tasks_total += 1
        self.idle_cpu = cpu

    def charge_log(self, nbytes: int, budget: int) -> bool:
        """Counts one task log line of ``nbytes`` against TASK_LOG_MAX_BYTES; whether it is kept."""
        self.log_bytes += nbytes + 100  # a line's prefix (time, level, logger, task id) is ~100 bytes in the file
        if self.log_bytes <= budget:
            return True
        self.log_dropped += 1
        self.log_dropped_bytes += nbytes
        return False

    def end_log_budget(self) -> tuple[int, int]:
        """The task's dropped (lines, bytes); the budget starts over."""
        dropped = self.log_dropped, self.log_dropped_bytes
        self.log_bytes = self.log_dropped = self.log_dropped_bytes = 0
        return dropped

    def pause(self, seconds: float, now: float) -> None:
        """IDLE -> PAUSED for TASK_ERROR_SLEEP after a failed task."""
        self.pause_until = now + seconds
        log.info("slot %d: pausing %.0f s after a failed task (TASK_ERROR_SLEEP)", self.index, seconds)

    def end_pause(self, reason: str, now: float) -> None:
        """PAUSED -> IDLE at once (dev reload: the failure may be what was fixed)."""
        if self.pause_until > now:
            log.info("slot %d: pause after a failed task ended (%.0f s early): %s", self.index,
                     self.pause_until - now, reason)
        self.pause_until = 0.0

    def retire_when_idle(self, reason: str) -> None:
        """Takes no more work; its executor is replaced once idle."""
        self.retire = reason

    # ---- losing the executor -----------------------------------------------------------------

    def _drop(self) -> Running | None:
        """-> DOWN: the one place a slot lets go of its executor (and of the task it ran)."""
        running = self.running
        self.executor = None
        self.running = None
        return running

    def crashed(self, how: str) -> Running | None:
        """IDLE or BUSY -> DOWN: its executor ended by itself. Returns the task it took down."""
        running = self._drop()
        if running is not None:
            task = running.claim.task
            log.error("task %r (%s) crashed its executor on slot %d (%s); starting a fresh executor",
                      task.id, task.task_type, self.index, how)
        else:
            log.error("slot %d: idle executor died (%s); starting a fresh one", self.index, how)
        return running

    def killed_for_limit(self, text: str, processes: int, ms: float) -> Running:
        """BUSY -> DOWN: its task broke a limit and its tree was killed."""
        running = self._drop()
        assert running is not None
        task = running.claim.task
        log.warning("task %r (%s) on slot %d: %s; killed its %d process(es) in %.0f ms; starting a fresh executor",
                    task.id, task.task_type, self.index, text, processes, ms)
        return running

    def killed_at_shutdown(self, reason: str) -> Running | None:
        """BUSY -> DOWN at a forced shutdown; its claim stays in the journal."""
        running = self.running
        if running is not None:
            log.warning("task %r (%s) on slot %d killed: %s", running.claim.task.id, running.claim.task.task_type,
                        self.index, reason)
        return self._drop()

    def recycled(self) -> None:
        """IDLE -> DOWN, to be started again at once (retire_when_idle's reason)."""
        pid = self.executor.pid if self.executor is not None else 0
        log.info("slot %d: recycling executor pid %d: %s", self.index, pid, self.retire)
        self._drop()

    def stopped(self) -> None:
        """-> DOWN as the pool stops."""
        self._drop()
