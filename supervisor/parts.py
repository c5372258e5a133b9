"""What the arbiter is built from: each part's surface as the arbiter uses it, and the set of them.

arbiter.build_arbiter makes the production set (real executors, HTTP threads, the journal on
disk); tests/support/fake_parts.py makes one whose pool, claim and submit loops are fakes, so the
loop's behaviours are tested in-process in milliseconds. A part is named here by what the
arbiter calls on it, nothing more: a fake that has these is a part.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import socket
    import threading

    from common.vocabulary import FailureKind
    from supervisor.lifecycle import Lifecycle
    from supervisor.model import Claim
    from supervisor.net.backoff import Backoff
    from supervisor.net.claimer import ClaimGate
    from supervisor.observe.diagnostics import Health
    from supervisor.observe.status import Status
    from supervisor.store.diskguard import DiskGuard
    from supervisor.store.journal import Journal
    from supervisor.store.outbox import Outbox
    from supervisor.update.coordinator import Worker

# on_result(claim, ok, raw_result_json, kind, seconds): how the pool and the updater answer a task.
ResultSink = Callable[["Claim", bool, bytes, "FailureKind | None", float], None]


class SlotView(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def ready(self) -> bool: ...  # its executor started and imported the registry (the health probe's wait)


class PoolPart(Protocol):
    """supervisor.pool.pool.Pool, as the loop drives it (all calls on the loop's thread)."""

    @property
    def slots(self) -> Sequence[SlotView]: ...
    @property
    def last_start_error(self) -> str: ...  # why the last executor failed to start (named by cannot_run)

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def serve(self, timeout: float, extra: tuple[Any, ...] = ()) -> list[Any]: ...
    def ready_count(self, now: float) -> int: ...
    def any_up(self, now: float) -> bool: ...
    def busy(self) -> Sequence[object]: ...
    def describe(self, now: float) -> list[dict[str, Any]]: ...
    def dispatch(self, claim: Claim) -> bool: ...
    def check_limits(self) -> None: ...
    def maintain(self) -> None: ...
    def kill_running(self, reason: str) -> list[Claim]: ...
    def retire_all(self, reason: str) -> None: ...
    def clear_pauses(self, reason: str) -> None: ...


class ThreadPart(Protocol):
    """A helper thread the watchdog watches (threading.Thread's surface)."""

    def start(self) -> None: ...
    def is_alive(self) -> bool: ...


class SubmitPart(ThreadPart, Protocol):
    """supervisor.net.submitter.SubmitLoop: takes results, posts them, keeps the rest on disk."""

    @property
    def closing(self) -> threading.Event: ...  # set at shutdown: post what can be posted, then end

    def hand_over(self, key: str, body: bytes, task_id: Any) -> None: ...
    def persist(self, force: bool = False) -> int: ...
    def join(self, timeout: float | None = None) -> None: ...
    def in_memory(self) -> int: ...
    def describe(self) -> dict[str, Any]: ...
    def backlog_bytes(self) -> int: ...


class FlusherPart(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class GuestPart(Protocol):
    """supervisor.guest.Guest: whether the PC's owner wants no new work now."""

    def describe_start(self) -> None: ...
    def paused(self, now: float) -> str | None: ...
    def state(self, now: float) -> dict[str, Any]: ...


class CpuCapPart(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...


class UpdatesPart(Protocol):
    """supervisor.update.coordinator.UpdateCoordinator, as the loop asks it."""

    @property
    def handed_over(self) -> bool: ...
    def hold(self, now: float) -> str | None: ...
    def on_start(self, now: float) -> int | None: ...
    def wants_health_check(self) -> bool: ...
    def report_previous(self, now: float) -> None: ...
    def on_stop(self, now: float) -> None: ...
    def receive(self, claim: Claim, now: float) -> None: ...
    def step(self, now: float, came_up: bool = True) -> None: ...


class WakeupPart(Protocol):
    """The loop's wake-up channel (arbiter.WakeSocket): written from any thread or a signal handler."""

    @property
    def reader(self) -> socket.socket: ...  # part of the loop's wait (Pool.serve's extra)
    @property
    def writer(self) -> socket.socket: ...  # signal.set_wakeup_fd writes a signal's number to it

    def wake(self) -> None: ...
    def drain(self) -> list[int]: ...


@dataclass(frozen=True)
class Parts:
    """An arbiter's parts. The two that answer tasks through the arbiter are given as builders
    that take its answer (the pool its result sink, the updater its Worker); the rest are built."""

    life: Lifecycle
    wakeup: WakeupPart
    pool: Callable[[ResultSink], PoolPart]
    updates: Callable[[Worker], UpdatesPart]
    gate: ClaimGate
    claimer: ThreadPart
    submitter: SubmitPart
    flusher: FlusherPart
    journal: Journal
    outbox: Outbox
    disk: DiskGuard
    backoff: Backoff
    status: Status
    guest: GuestPart
    cpucap: CpuCapPart
    health: Health
    clock: Callable[[], float] = time.monotonic  # monotonic seconds: every time the loop reads
