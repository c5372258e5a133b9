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
from typing import Any

from supervisor.model import Claim, Task
from supervisor.net.backoff import Backoff, jittered
from supervisor.net.client import NO_TASKS, HiveClient, MalformedTask, ServerError
from supervisor.observe import liveness
from supervisor.store.diskguard import DiskGuard
from supervisor.store.flusher import Flusher
from supervisor.store.journal import Journal, new_key

log = logging.getLogger("hive.claim")


def claim_record(task: Task) -> dict[str, Any]:
    """A claim as the journal keeps it; recovery.py reads it back to report an interrupted task."""
    record = {"id": task.id, "task_type": task.task_type or None}
    if task.id_json is not None:
        record["id_json"] = task.id_json.decode("utf-8")  # the id exactly as sent (Task.id_json)
    return record


class ClaimGate:
    """How many more tasks may be claimed now, shared by the arbiter and the claim thread.

    A claim of one of ``exclusive`` task types (the self-update, whose drain must see no claim
    after it) holds the gate itself the moment the claim thread hands it over, in the same lock:
    the claim thread's next acquire() already waits, whatever the arbiter's loop is doing. The
    arbiter's own hold (set_ready) takes over once that claim has been taken, so there is no gap
    between the two; if the arbiter sets no hold then (an update refused at once), claiming resumes.
    """

    def __init__(self, on_claim: Callable[[], None], exclusive: frozenset[str] = frozenset()) -> None:
        self.cond = threading.Condition()
        self.ready = 0  # executors ready and idle (set by the arbiter)
        self.inflight = 0  # GETs under way
        self.pending: deque[Claim] = deque()  # claimed, not yet taken by the arbiter
        self.hold: str | None = None  # a reason not to claim at all (draining, outbox full)
        self.exclusive = exclusive
        self.claimed_hold: str | None = None  # set by an exclusive claim until the arbiter's hold takes over
        self.on_claim = on_claim  # wakes the arbiter

    def set_ready(self, ready: int, hold: str | None) -> None:
        with self.cond:
            claimed_hold = self.claimed_hold
            if claimed_hold and not any(c.task.task_type in self.exclusive for c in self.pending):
                claimed_hold = None  # taken by the arbiter, whose hold (if any) is this one
            if ready != self.ready or hold != self.hold or claimed_hold != self.claimed_hold:
                self.ready, self.hold, self.claimed_hold = ready, hold, claimed_hold
                self.cond.notify_all()

    def _room(self) -> int:
        return self.ready - self.inflight - len(self.pending)

    def may_claim(self) -> bool:
        """Whether a slot can be taken now (call with ``cond`` held)."""
        return self.hold is None and self.claimed_hold is None and self._room() > 0

    def acquire(self, timeout: float) -> bool:
        with self.cond:
            if not self.cond.wait_for(self.may_claim, timeout):
                return False
            self.inflight += 1
            return True

    def release(self, claim: Claim | None) -> None:
        with self.cond:
            self.inflight -= 1
            if claim is not None:
                self.pending.append(claim)
                if claim.task.task_type in self.exclusive:
                    self.claimed_hold = f"{claim.task.task_type} claimed"
        if claim is not None:
            self.on_claim()

    def put_back(self, claim: Claim) -> None:
        """A claim the arbiter could not place yet: first in line next time."""
        with self.cond:
            self.pending.appendleft(claim)

    def take(self, close: bool = False) -> Claim | None:
        """The oldest claim waiting; with ``close``, in the same lock, no more slots until the next
        set_ready (a lent slot is used up by the claim it brought, with no window for a second)."""
        with self.cond:
            if close and self.pending:
                self.ready = 0
            return self.pending.popleft() if self.pending else None

    def outstanding(self) -> int:
        with self.cond:
            return self.inflight + len(self.pending)


class ClaimLoop(threading.Thread):
    def __init__(self, client: HiveClient, gate: ClaimGate, journal: Journal, flusher: Flusher, backoff: Backoff,
                 no_task_sleep: float, stop: threading.Event, status: Any, disk: DiskGuard) -> None:
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
        self.idle_wait = 0.0  # set after no_tasks: how long to wait before the next claim
        self.disk = disk

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                liveness.beat(liveness.CLAIM)
                wait = self.backoff.remaining()
                if wait > 0:
                    self.stop.wait(min(wait, 1.0))
                    continue
                if self.disk.broken:  # checked here too: the arbiter's hold comes a loop turn later
                    self.stop.wait(0.5)
                    continue
                if not self.gate.acquire(timeout=0.5):
                    continue
                claim = None
                try:
                    claim = self.claim_once()
                except Exception as exc:  # noqa: BLE001 - MemoryError, a bug, anything: never lose the slot
                    delay = self.backoff.failure()
                    self.status.server_error(f"claim failed: {type(exc).__name__}: {exc}")
                    log.error("claim failed unexpectedly (%s: %s); slot given back, next try in %.1f s",
                              type(exc).__name__, exc, delay)
                    log.debug("claim failure", exc_info=True)
                finally:
                    self.gate.release(claim)  # exactly once per acquire, whatever happened
                if self.idle_wait:
                    self.stop.wait(self.idle_wait)  # after the release: a stop need not wait for it
                    self.idle_wait = 0.0
        finally:
            self.client.close()

    def _journal(self, claim: Claim, record: dict) -> None:
        try:
            self.journal.record(claim.key, record)  # written, not yet flushed: flusher.py says why that is enough
        except OSError as exc:
            # Claimed is claimed (protocol v1 has no requeue): it runs from memory, and no more are claimed.
            self.disk.failed(exc, f"task {claim.task.id!r} runs from memory")
            return
        self.flusher.kick()

    def claim_once(self) -> Claim | None:
        """Ask for one task; the claim to run, or None (the caller gives the slot back)."""
        try:
            answer = self.client.get_task()
        except ServerError as exc:
            delay = self.backoff.failure(exc.retry_after)
            self.status.server_error(str(exc))
            log.warning("cannot get a task: %s; next try in %.1f s", exc, delay)
            return None
        except MalformedTask as exc:
            self.status.server_error(str(exc))
            if not exc.has_id:
                delay = self.backoff.failure()
                log.warning("%s; next try in %.1f s", exc, delay)
                return None
            task = Task(id=exc.task_id, task_type=exc.task_type, params={}, id_json=exc.task_id_json)
            claim = Claim(new_key(), task, malformed=str(exc), kind=exc.kind)
            self._journal(claim, claim_record(task))
            # INFO: the arbiter's "task ... failed" WARNING that follows carries the same reason.
            log.info("%s; failing it back to the server", exc)
            return claim
        self.backoff.success()
        self.status.server_ok()
        if answer == NO_TASKS:
            self.idle_wait = jittered(self.no_task_sleep)
            if not self.idle_logged:
                log.info("no tasks on the server; asking again every ~%.0f s", self.no_task_sleep)
                self.idle_logged = True
            else:
                log.debug("no tasks; next poll in %.1f s", self.idle_wait)
            return None
        self.idle_logged = False
        claim = Claim(new_key(), answer)
        self._journal(claim, claim_record(answer))
        log.info("claimed task %r (%s)", answer.id, answer.task_type)
        return claim
