"""The self-update as the supervision loop sees it: drain, prepare (off-thread), hand over.

One update at a time, in one explicit phase. Only the loop's thread changes the phase: the
prepare thread (download, verify, self-test: minutes) hands its outcome back through a queue
and wakes the loop, which takes the outcome on its next turn. So no lock is needed and no
phase is ever seen half-changed.

    IDLE --receive--> DRAINING --drained or UPDATE_DRAIN_TIMEOUT--> PREPARING
    PREPARING --outcome: already running, or refused--> IDLE (a refusal pauses claims)
    PREPARING --outcome: staged, updater started--> HANDED_OVER (the worker exits)
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from common.safetext import redact_url
from supervisor.host.home import is_frozen
from supervisor.model import Claim, Task
from supervisor.settings import Settings
from supervisor.store.journal import new_key
from supervisor.update import probation, startup, updater
from supervisor.update.errors import UpdateRefused
from supervisor.update.records import read_pending, update_dir

log = logging.getLogger("hive.supervisor")

TASK_TYPE = "update_worker"


class Phase(enum.Enum):
    IDLE = "idle"  # no update in progress
    DRAINING = "draining"  # not claiming; running tasks get UPDATE_DRAIN_TIMEOUT to finish
    PREPARING = "preparing"  # download, verify and self-test run on their own thread
    HANDED_OVER = "handed over"  # the updater script runs; this worker exits without waiting


@dataclass(frozen=True)
class Worker:
    """What the coordinator may ask of the worker around it (the arbiter; in unit tests, fakes)."""

    in_flight: Callable[[], tuple[int, int]]  # (tasks running in executors, claimed but not yet placed)
    kill_running: Callable[[str], object]  # why
    answer: Callable[[Claim, bool, bytes], None]  # post a result: ok, raw result JSON (failures: update_failed)
    fail: Callable[[Claim, str], None]  # post an update_failed result with this error
    persist: Callable[[], object]  # results waiting in memory go to disk before the hand-over
    forget: Callable[[Claim], None]  # the claim leaves the journal: the next version reports the task
    stop: Callable[[str], None]  # why
    wake: Callable[[], None]  # the loop's next turn comes at once (safe from any thread)


class UpdateCoordinator:
    def __init__(self, settings: Settings, version: str, worker_id: str, worker: Worker, frozen: bool | None = None,
                 prepare: Callable[[Any], updater.Staged | None] | None = None,
                 launch: Callable[[updater.Staged, Claim], None] | None = None) -> None:
        self.settings = settings
        self.version = version
        self.worker_id = worker_id
        self.worker = worker
        self.frozen = is_frozen() if frozen is None else frozen
        self._prepare = prepare or (lambda params: updater.prepare(params, settings, version))
        self._launch = launch or (lambda staged, claim: updater.launch(staged, settings, claim.task.id, worker_id,
                                                                       version))
        self.phase = Phase.IDLE
        self.claim: Claim | None = None  # the update task in progress
        self.drain_deadline = 0.0
        self.prepared: queue.SimpleQueue[updater.Staged | UpdateRefused | None] = queue.SimpleQueue()
        self.pause_until = 0.0
        self.pause_why = ""
        self.probation = probation.Probation(settings.home, version, settings.update_health_timeout)

    @property
    def handed_over(self) -> bool:
        return self.phase is Phase.HANDED_OVER

    def hold(self, now: float) -> str | None:
        """Why no claim may go out because of an update (drain, or the pause after a failed one)."""
        if self.phase in (Phase.DRAINING, Phase.PREPARING):
            return "draining for an update"
        if now < self.pause_until:
            return self.pause_why
        return None

    def on_start(self, now: float) -> int | None:
        """Frozen only: repair what an interrupted update left, say whether updates are off, count
        the previous run of a version on probation. An exit status when this start rolled back."""
        if not self.frozen:
            return None
        startup.on_start(self.settings.home)
        startup.check_settings(self.settings)  # warns: no release key (updates off), or unsigned allowed
        try:
            return self.probation.on_start(Path(os.path.abspath(sys.executable)), now)
        except Exception:  # noqa: BLE001 - update bookkeeping must never stop a worker from starting
            log.exception("update: the probation check failed")
            return None

    def wants_health_check(self) -> bool:
        """Whether this start must prove it does work before it counts as healthy: an update
        waits for its outcome, or this version is on probation."""
        return self.frozen and (self.probation.record is not None
                                or read_pending(update_dir(self.settings.home)) is not None)

    def report_previous(self, now: float) -> None:
        """Once healthy (health.py): post how a previous update ended."""
        for task_id, ok, raw, pause in startup.on_healthy(self.settings.home, self.version, self.worker_id,
                                                          self.settings.update_probation):
            self.worker.answer(Claim(new_key(), Task(id=task_id, task_type=TASK_TYPE, params={})), ok, raw)
            if pause:
                self.pause_claims(now, pause, "UPDATE_ERROR_SLEEP after a rolled-back update")
        if self.probation.record is None:
            record = probation.read(self.probation.upd)  # begun just now, by this (healthy) new version
            if record is not None and record.get("version") == self.version:
                self.probation.adopt(record, now)

    def on_stop(self, now: float) -> None:
        """The worker stops cleanly: this run of a version on probation is not counted as failed."""
        self.probation.on_stop(now)

    def receive(self, claim: Claim, now: float) -> None:
        """An update task was claimed: refused at once, or the drain starts."""
        refusal = updater.refusal_at_once(self.settings)
        if refusal:  # nothing drained, downloaded or run; the worker serves on without a pause
            self.worker.fail(claim, refusal)
            return
        if not self.frozen:
            self.worker.fail(claim, "self-update needs the frozen build (this worker runs from source)")
            return
        if self.phase is not Phase.IDLE:
            self.worker.fail(claim, "another update is already in progress")
            return
        running, _ = self.worker.in_flight()
        log.info("update: task %r received; not claiming, draining %d running task(s) for up to %.0f s",
                 claim.task.id, running, self.settings.update_drain_timeout)
        self.claim = claim
        self.drain_deadline = now + self.settings.update_drain_timeout
        self.phase = Phase.DRAINING

    def step(self, now: float, came_up: bool = True) -> None:
        """One turn of the loop: end the drain when it is over, take the prepare thread's outcome,
        count the running time of a probation (``came_up``: health.StartHealth.came_up)."""
        stop = self.probation.tick(now, came_up)
        if stop:
            log.error("update: %s", stop)
            self.worker.stop("did not come up during the probation")
        if self.phase is Phase.DRAINING:
            self._drain(now)
        elif self.phase is Phase.PREPARING:
            try:
                outcome = self.prepared.get_nowait()
            except queue.Empty:
                return
            self._finish(outcome, now)

    def _drain(self, now: float) -> None:
        assert self.claim is not None
        running, claimed = self.worker.in_flight()
        drained = running == 0 and claimed == 0
        if not drained and now < self.drain_deadline:
            return
        if not drained:
            log.warning("update: UPDATE_DRAIN_TIMEOUT passed with %d task(s) running; they are killed and "
                        "will be reported interrupted", running)
            self.worker.kill_running("self-update")
        self.phase = Phase.PREPARING
        params = self.claim.task.params
        log.info("update: preparing %s", redact_url(str(params.get("url"))) if isinstance(params, dict) else params)
        threading.Thread(target=self._prepare_off_thread, args=(params,), name="update-prepare",
                         daemon=True).start()

    def _prepare_off_thread(self, params: Any) -> None:
        """The prepare thread: it only computes the outcome; the loop's thread acts on it."""
        outcome: updater.Staged | UpdateRefused | None
        try:
            outcome = self._prepare(params)
        except UpdateRefused as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - any surprise is a refused update, never a crash
            log.exception("update: unexpected error")
            outcome = UpdateRefused(f"{type(exc).__name__}: {exc}")
        self.prepared.put(outcome)
        self.worker.wake()

    def _finish(self, outcome: updater.Staged | UpdateRefused | None, now: float) -> None:
        claim = self.claim
        assert claim is not None
        # IDLE first: should anything below raise, the loop goes on and no update is stuck half-way.
        self.claim, self.phase = None, Phase.IDLE
        if outcome is None:
            log.info("update: version %s is already running; nothing to do", self.version)
            self.worker.answer(claim, True, orjson.dumps({"message": f"already running {self.version}"}))
            return
        if isinstance(outcome, updater.Staged):
            try:
                self.worker.persist()
                self._launch(outcome, claim)
            except UpdateRefused as exc:
                outcome = exc
            else:
                self.worker.forget(claim)  # the new version (or the rollback) reports this task
                log.info("update: updater started for version %s; this worker exits now", outcome.version)
                self.phase = Phase.HANDED_OVER
                self.worker.stop("self-update")
                return
        self.worker.fail(claim, f"update refused: {outcome}")
        self.pause_claims(now, self.settings.update_error_sleep, "UPDATE_ERROR_SLEEP after a failed update")

    def pause_claims(self, now: float, seconds: float, why: str) -> None:
        if seconds > 0:
            self.pause_until = now + seconds
            self.pause_why = why
            log.info("not claiming for %.0f s (%s)", seconds, why)
