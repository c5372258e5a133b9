"""Whether this start of the worker came up and is healthy (issue 24.1): healthy means doing work.

Came up: every executor slot of the pool has started and imported the task registry (its Ready
frame) at least once, and one built-in PROBE_TASK has made the full round trip through an
executor (dispatched like any task, its result read back from the pipe). Healthy: came up, and the
server answered. A self-updated version decides its update (startup.on_healthy) only once healthy,
so a release whose executors cannot start, or start only in part, is rolled back by the updater;
during the probation that follows (probation.py) a start that does not come up counts as a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from executor.protocol import PROBE_TASK
from supervisor.model import Claim, Task
from supervisor.store.journal import new_key

log = logging.getLogger("hive.update")

PROBE_RETRY = 5.0  # seconds before a failed probe is sent again


class StartHealth:
    """Tracks one start: which slots have been ready, and the probe. Fed by the supervision loop."""

    def __init__(self, slots: int, wanted: bool) -> None:
        """``wanted``: only a start with an update to decide or a probation to serve checks this
        (UpdateCoordinator.wants_health_check); any other start counts as come up at once."""
        self.slots = slots
        self.seen_ready: set[int] = set()
        self.probe: Claim | None = None  # in an executor now
        self.next_probe = 0.0
        self.came_up = not wanted

    def probe_to_send(self, ready_slots: Iterable[int], now: float) -> Claim | None:
        """Note which slots are ready; the probe to dispatch now, once every slot has been ready."""
        if self.came_up or self.probe is not None:
            return None
        self.seen_ready.update(ready_slots)
        if len(self.seen_ready) < self.slots or now < self.next_probe:
            return None
        self.probe = Claim(new_key(), Task(id="probe", task_type=PROBE_TASK, params={}))
        return self.probe

    def not_sent(self) -> None:
        """No executor took the probe this turn (all busy): it goes out on a later turn."""
        self.probe = None

    def is_probe(self, claim: Claim) -> bool:
        return self.probe is not None and claim is self.probe

    def probe_done(self, ok: bool, error: str, now: float) -> None:
        self.probe = None
        if ok:
            self.came_up = True
            log.info("this start came up: %d executor(s) started and imported the task registry, and a probe task "
                     "made the round trip", self.slots)
        else:
            self.next_probe = now + PROBE_RETRY
            log.warning("the probe task failed in an executor (%s); sent again in %.0f s", error, PROBE_RETRY)
