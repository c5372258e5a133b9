"""The worker's lifecycle as data: its stages, the transitions allowed between them, and stop requests.

Only the loop's thread changes the stage, and only through ``Lifecycle.enter``, which checks
the move against TRANSITIONS and logs it in one line. Any thread (a signal read by the loop,
Windows' console handler, the update coordinator, a test) may only *ask*: ``request_stop``
and ``force`` set flags the loop reads on its next turn (update/coordinator.py's Phase and
h11's _state.py work the same way).

    STARTING --threads and executors started--> RUNNING
    RUNNING --a stop was asked for (or the loop ended)--> STOPPING (SHUTDOWN_GRACE starts)
    STOPPING --executors stopped, results persisted--> STOPPED
"""

from __future__ import annotations

import logging
import signal
import threading
from enum import StrEnum

log = logging.getLogger("hive.supervisor")


class Stage(StrEnum):
    """As status.json's "state" and worker_diagnostics show it."""

    STARTING = "starting"  # recovering the journal, starting threads and executors; no claim yet
    RUNNING = "running"  # claiming and running tasks
    STOPPING = "stopping"  # no more claims; running tasks get SHUTDOWN_GRACE (or are killed: force)
    STOPPED = "stopped"  # executors stopped, results persisted: the process exits


TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.STARTING: frozenset({Stage.RUNNING}),
    Stage.RUNNING: frozenset({Stage.STOPPING}),
    Stage.STOPPING: frozenset({Stage.STOPPED}),
    Stage.STOPPED: frozenset(),
}


class LifecycleError(RuntimeError):
    """A move TRANSITIONS does not allow: a bug in the loop, never something the world does."""


class Lifecycle:
    def __init__(self, grace: float) -> None:
        self.grace = grace  # SHUTDOWN_GRACE, seconds
        self.stage = Stage.STARTING
        # Asked by any thread; read by the loop (and by the claim thread, which stops claiming).
        self.stop_requested = threading.Event()
        self.stop_reason: str | None = None
        self.forced = False  # kill running tasks now instead of waiting out the grace
        self.grace_deadline: float | None = None  # monotonic; set on entering STOPPING
        self.stopped = threading.Event()  # STOPPED was entered: Windows' console handler waits for it
        self.signals_taken = 0  # of the arbiter's list of signals read (take_signals)

    def enter(self, stage: Stage, now: float, line: str, *args: object) -> None:
        """The one place the stage changes (the loop's thread only): ``line % args`` is its log line."""
        if stage not in TRANSITIONS[self.stage]:
            raise LifecycleError(f"the lifecycle cannot go from {self.stage} to {stage}")
        self.stage = stage
        if stage is Stage.STOPPING:
            self.grace_deadline = now + self.grace
        log.info(line, *args)
        if stage is Stage.STOPPED:
            self.stopped.set()

    # ---- requests: safe from any thread ---------------------------------------------------------

    def request_stop(self, why: str) -> None:
        """Stop claiming and stop the worker; the first reason asked is the one kept."""
        if not self.stop_requested.is_set():
            self.stop_reason = why
            self.stop_requested.set()

    def force(self) -> None:
        """Running tasks are killed at the loop's next turn instead of getting the grace."""
        self.forced = True

    # ---- what the loop decides from them --------------------------------------------------------

    def take_signals(self, signals: list[int]) -> None:
        """The stop signals read so far, in order: the first asks for a graceful stop, any later one forces it."""
        count = len(signals)
        if count == self.signals_taken:
            return
        if self.signals_taken == 0:
            self.request_stop(f"signal {signal.Signals(signals[0]).name}")
        if count > 1:
            self.force()
        self.signals_taken = count

    def must_kill(self, now: float) -> str | None:
        """While stopping: why running tasks are killed now (a forced stop, the grace ran out), or None."""
        if self.forced:
            return "second interrupt"
        if self.grace_deadline is not None and now > self.grace_deadline:
            return f"SHUTDOWN_GRACE of {self.grace:g} s ran out"
        return None
