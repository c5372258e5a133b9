"""A pool slot as data: what it holds, what it runs, and the state it is in (no processes here)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.model import Claim
    from supervisor.pool.executors import Executor


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


@dataclass
class Slot:
    index: int
    executor: Executor | None = None
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
