"""The claim-hold decision: whether claims may go out this turn, how many, and why not.

Pure (no I/O, no clock of its own), beside pool/limits.breach: the arbiter gathers what one turn saw
(GateInputs), calls claim_hold, and applies the answer (says the notices, sets the gate, writes
status.json). tests/test_unit_arbiter.py walks it over its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


def down_too_long(down_for: float | None, interval: float) -> bool:
    """No executor has been up for ``interval`` seconds (``down_for``: None while one is up; an
    interval of 0 turns this off): the worker lends claims and says it cannot run tasks."""
    return interval > 0 and down_for is not None and down_for >= interval


def lend_a_claim(down_for: float | None, since_lent: float, interval: float) -> bool:
    """Whether a worker with no executor up may claim one task now: after ``interval`` seconds with
    none up (``down_for``, None while one is up) and ``interval`` after the last one it claimed
    so. Such a task is answered by the supervisor itself (worker_diagnostics, update_worker) or
    failed at once naming why, never run: the server can still reach and repair this PC."""
    return down_too_long(down_for, interval) and since_lent >= interval


class Notice(Enum):
    """A change the claim-hold decision saw, said once in the log by the arbiter."""

    OUTBOX_FULL = "outbox full"  # results waiting to be posted went over OUTBOX_MAX_MB
    OUTBOX_OK = "outbox below its cap"  # ... and are below it again
    LENDING = "lending"  # no executor up for NO_EXECUTOR_CLAIM_INTERVAL: one claim is lent


@dataclass(frozen=True)
class GateInputs:
    """What one turn saw, for the claim-hold decision."""

    now: float  # monotonic
    stopping: bool
    update_hold: str | None  # UpdateCoordinator.hold: a drain, or the pause after a failed update
    # None while the disk takes writes, else why not. Called only when no stop or update holds
    # claims (DiskGuard.writable probes the disk, at most every PROBE_EVERY, and logs its recovery).
    disk_problem: Callable[[], str | None]
    outbox_full: bool  # the outbox and the results in memory are over OUTBOX_MAX_MB
    outbox_full_said: bool  # the "outbox full" line is out, and no "below its cap again" since
    paused: str | None  # why the PC's owner wants no new work (guest.py)
    ready: int  # executors idle and taking work
    down_since: float | None  # since when no executor is up (None: one is)
    lent_at: float  # when the last claim was lent
    lend_every: float  # NO_EXECUTOR_CLAIM_INTERVAL
    lending: bool  # the gate had a slot lent after the previous turn
    backoff_left: float  # seconds the claim thread still waits after server trouble
    cannot_run: str | None  # why no task can run here (Arbiter.cannot_run)


@dataclass(frozen=True)
class GateAnswer:
    hold: str | None  # why the gate lets no claim out (None: it offers ``offer`` slots)
    offer: int
    lending: bool
    not_claiming: str | None  # status.json's reason: the hold, or why the claim thread waits anyway
    outbox_full_said: bool
    notices: tuple[Notice, ...]


def claim_hold(seen: GateInputs) -> GateAnswer:
    """Whether claims may go out this turn, how many, and why not: the one place that decides.
    Holds in order of precedence: stopping, an update, the disk, a full outbox, the owner's pause."""
    notices: list[Notice] = []
    said = seen.outbox_full_said
    hold: str | None = None
    if seen.stopping:
        hold = "stopping"
    elif seen.update_hold:
        hold = seen.update_hold
    elif (problem := seen.disk_problem()) is not None:
        hold = problem
    elif seen.outbox_full:
        hold = "outbox full"
        if not said:
            notices.append(Notice.OUTBOX_FULL)
            said = True
    elif said:
        notices.append(Notice.OUTBOX_OK)
        said = False
    hold = hold or (seen.paused and f"paused: {seen.paused}")
    down_for = None if seen.down_since is None else seen.now - seen.down_since
    lend = hold is None and seen.ready == 0 and lend_a_claim(down_for, seen.now - seen.lent_at, seen.lend_every)
    if lend and not seen.lending:
        notices.append(Notice.LENDING)
    return GateAnswer(hold=hold, offer=1 if lend else seen.ready, lending=lend,
                      not_claiming=hold or _waiting_for(seen, lend), outbox_full_said=said, notices=tuple(notices))


def _waiting_for(seen: GateInputs, lending: bool) -> str | None:
    """Reasons the claim thread waits though nothing holds the gate (the one place they are named)."""
    if seen.backoff_left > 0:
        return f"backing off after server trouble: next try in {seen.backoff_left:.0f} s"
    if lending:
        return None  # one claim lent to a worker whose executors cannot start
    if seen.ready == 0:
        if seen.cannot_run is not None:
            return f"this worker cannot run tasks: {seen.cannot_run}; one claim per {seen.lend_every:g} s"
        return "no idle executor (all busy, starting or pausing after a failure)"
    return None
