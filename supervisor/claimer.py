"""The claim loop (its own thread): ask the server for a task only when an executor can take it.

Pacing rules of the deployed fleet: never hold more tasks than there are ready
executors; after "no_tasks" the whole worker waits NO_TASK_SLEEP (a pool of N
must not poll N times as often); server trouble backs off (shared Backoff).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supervisor.backoff import Backoff, jittered
from supervisor.client import NO_TASKS, HiveClient, MalformedTask, ServerError, Task
from supervisor.flusher import Flusher
from supervisor.outbox import Journal, new_key

log = logging.getLogger("hive.claim")


@dataclass
class Claim:
    key: str  # journal key; the result is stored under it too
    task: Task
    malformed: str | None = None  # set when the task cannot run; it is failed back at once


class ClaimGate:
    """How many more tasks may be claimed now, shared by the arbiter and the claim thread."""

    def __init__(self, on_claim: Callable[[], None]) -> None:
        self.cond = threading.Condition()
        self.ready = 0  # executors ready and idle (set by the arbiter)
        self.inflight = 0  # GETs under way
        self.pending: deque[Claim] = deque()  # claimed, not yet taken by the arbiter
        self.hold: str | None = None  # a reason not to claim at all (draining, outbox full)
        self.on_claim = on_claim  # wakes the arbiter

    def set_ready(self, ready: int, hold: str | None) -> None:
        with self.cond:
            if ready != self.ready or hold != self.hold:
                self.ready, self.hold = ready, hold
                self.cond.notify_all()

    def _room(self) -> int:
        return self.ready - self.inflight - len(self.pending)

    def acquire(self, timeout: float) -> bool:
        with self.cond:
            if not self.cond.wait_for(lambda: self.hold is None and self._room() > 0, timeout):
                return False
            self.inflight += 1
            return True

    def release(self, claim: Claim | None) -> None:
        with self.cond:
            self.inflight -= 1
            if claim is not None:
                self.pending.append(claim)
        if claim is not None:
            self.on_claim()

    def put_back(self, claim: Claim) -> None:
        """A claim the arbiter could not place yet: first in line next time."""
        with self.cond:
            self.pending.appendleft(claim)

    def take(self) -> Claim | None:
        with self.cond:
            return self.pending.popleft() if self.pending else None

    def outstanding(self) -> int:
        with self.cond:
            return self.inflight + len(self.pending)


class ClaimLoop(threading.Thread):
    def __init__(self, client: HiveClient, gate: ClaimGate, journal: Journal, flusher: Flusher, backoff: Backoff,
                 no_task_sleep: float, stop: threading.Event, status: Any) -> None:
        super().__init__(name="claim", daemon=True)
        self.client = client
        self.gate = gate
        self.journal = journal
        self.flusher = flusher
        self.backoff = backoff
        self.no_task_sleep = no_task_sleep
        self.stop = stop
        self.status = status
        self.idle_logged = False

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                wait = self.backoff.remaining()
                if wait > 0:
                    self.stop.wait(min(wait, 1.0))
                    continue
                if not self.gate.acquire(timeout=0.5):
                    continue
                try:
                    self.claim_once()
                except Exception:  # noqa: BLE001 - e.g. a full disk for the journal: say it, wait, go on
                    log.exception("claim failed unexpectedly; retrying in 5 s")
                    self.stop.wait(5.0)
        finally:
            self.client.close()

    def _journal(self, claim: Claim, record: dict) -> None:
        try:
            self.journal.record(claim.key, record)  # written, not yet flushed: flusher.py says why that is enough
        except OSError:
            # Not journalled, so not dispatched: the server's requeue must bring this task back.
            self.gate.release(None)
            log.error("cannot journal task %r; not running it", claim.task.id)
            raise
        self.flusher.kick()

    def claim_once(self) -> None:
        try:
            answer = self.client.get_task()
        except ServerError as exc:
            self.gate.release(None)
            delay = self.backoff.failure(exc.retry_after)
            self.status.server_error(str(exc))
            log.warning("cannot get a task: %s; next try in %.1f s", exc, delay)
            return
        except MalformedTask as exc:
            self.status.server_error(str(exc))
            if not exc.has_id:
                self.gate.release(None)
                delay = self.backoff.failure()
                log.warning("%s; next try in %.1f s", exc, delay)
                return
            task = Task(id=exc.task_id, task_type="", params={}, raw={})
            claim = Claim(new_key(), task, malformed=str(exc))
            self._journal(claim, {"id": task.id, "task_type": None})
            log.warning("%s; failing it back to the server", exc)
            self.gate.release(claim)
            return
        self.backoff.success()
        self.status.server_ok()
        if answer == NO_TASKS:
            self.gate.release(None)
            delay = jittered(self.no_task_sleep)
            if not self.idle_logged:
                log.info("no tasks on the server; asking again every ~%.0f s", self.no_task_sleep)
                self.idle_logged = True
            else:
                log.debug("no tasks; next poll in %.1f s", delay)
            self.stop.wait(delay)
            return
        self.idle_logged = False
        claim = Claim(new_key(), answer)
        self._journal(claim, {"id": answer.id, "task_type": answer.task_type})
        log.info("claimed task %r (%s)", answer.id, answer.task_type)
        self.gate.release(claim)
