"""Fakes of an Arbiter's parts (supervisor/parts.py), for in-process loop tests: no process, no HTTP.

The world around the loop is scripted on a fake clock. Each turn's wait (FakePool.serve) runs the
next scripted action, then returns at once if the wake-up socket has bytes (a claim, a signal),
else moves the clock on by the wait's timeout: an idle second costs no real time. The journal,
the outbox, the claim gate, the backoff, the status file and the lifecycle are the real ones.
"""

from __future__ import annotations

import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import config
from common.vocabulary import FailureKind, failure_json
from supervisor import settings as settings_mod
from supervisor.arbiter import Arbiter, WakeSocket
from supervisor.lifecycle import Lifecycle, Stage
from supervisor.model import Claim, Task
from supervisor.net.backoff import Backoff
from supervisor.net.claimer import ClaimGate
from supervisor.observe.diagnostics import Health
from supervisor.observe.status import Status
from supervisor.parts import Parts, ResultSink
from supervisor.settings import Settings
from supervisor.store.diskguard import DiskGuard
from supervisor.store.journal import Journal, new_key
from supervisor.store.outbox import Outbox
from supervisor.update.coordinator import TASK_TYPE as UPDATE_TASK
from supervisor.update.coordinator import UpdateCoordinator, Worker

MAX_TURNS = 10_000  # a loop that never ends fails its test instead of hanging it


class TooManyTurns(BaseException):
    """Not an Exception: the loop's catch-all lets it through, so a runaway loop ends the test."""


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeSlot:
    index: int
    ready: bool = False  # its executor started and imported the registry
    up: bool = False  # it has an executor (starting or ready)
    claim: Claim | None = None
    dispatched: float = 0.0
    tasks_done: int = 0


@dataclass
class FakePool:
    """Pool's public surface as the arbiter uses it. Executors come up at start() (or never:
    ``starts=False``); a dispatched task runs until the test says it finishes or crashes (or hangs,
    by saying nothing)."""

    on_result: ResultSink
    clock: FakeClock
    size: int = 2
    starts: bool = True
    slots: list[FakeSlot] = field(default_factory=list)
    last_start_error: str = ""
    script: deque[Callable[[], None]] = field(default_factory=deque)
    turns: int = 0
    killed: list[tuple[str, str]] = field(default_factory=list)  # (task id, why)
    dispatch_error: Callable[[Claim], None] | None = None  # raise from dispatch, as a bug would
    stopped: bool = False

    def __post_init__(self) -> None:
        self.slots = [FakeSlot(i) for i in range(self.size)]

    # ---- the test's side ------------------------------------------------------------------------

    def then(self, *actions: Callable[[], None]) -> None:
        """Run each action at the start of one later turn's wait, in order (one per turn)."""
        self.script.extend(actions)

    def running(self, task_id: str) -> FakeSlot:
        return next(s for s in self.slots if s.claim is not None and s.claim.task.id == task_id)

    def finish(self, task_id: str, ok: bool = True, raw: bytes = b'{"done": true}') -> None:
        slot = self.running(task_id)
        claim, slot.claim = slot.claim, None
        slot.tasks_done += 1
        assert claim is not None
        self.on_result(claim, ok, raw, None if ok else FailureKind.EXCEPTION, self.clock() - slot.dispatched)

    def crash(self, task_id: str, how: str = "killed by signal 9 (SIGKILL)") -> None:
        """What Pool._executor_lost reports for a busy executor that died (a fresh one replaces it)."""
        slot = self.running(task_id)
        claim, slot.claim = slot.claim, None
        assert claim is not None
        self.on_result(claim, False, failure_json(f"executor crashed: {how}", FailureKind.CRASHED),
                       FailureKind.CRASHED, self.clock() - slot.dispatched)

    # ---- what the arbiter calls ------------------------------------------------------------------

    def start(self) -> None:
        for slot in self.slots:
            slot.up = slot.ready = self.starts
        if not self.starts:
            self.last_start_error = "task registry import failed"

    def stop(self) -> None:
        self.stopped = True

    def serve(self, timeout: float, extra: tuple[Any, ...] = ()) -> list[Any]:
        self.turns += 1
        if self.turns > MAX_TURNS:
            raise TooManyTurns(f"the loop ran {MAX_TURNS} turns")
        if self.script:
            self.script.popleft()()
        ready = select.select(list(extra), [], [], 0)[0] if extra else []
        if not ready:
            self.clock.advance(timeout)
        return ready

    def ready_count(self, now: float) -> int:
        return sum(1 for s in self.slots if s.ready and s.claim is None)

    def any_up(self, now: float) -> bool:
        return any(s.up for s in self.slots)

    def busy(self) -> list[FakeSlot]:
        return [s for s in self.slots if s.claim is not None]

    def describe(self, now: float) -> list[dict[str, Any]]:
        return [{"slot": s.index, "state": "busy" if s.claim else "idle" if s.ready else "down",
                 "tasks_done": s.tasks_done, "pid": None, "task": None, "paused_seconds_left": None}
                for s in self.slots]

    def dispatch(self, claim: Claim) -> bool:
        if self.dispatch_error is not None:
            self.dispatch_error(claim)
        slot = next((s for s in self.slots if s.ready and s.claim is None), None)
        if slot is None:
            return False
        slot.claim, slot.dispatched = claim, self.clock()
        return True

    def check_limits(self) -> None:
        pass

    def maintain(self) -> None:
        pass

    def kill_running(self, reason: str) -> list[Claim]:
        claims = [s.claim for s in self.slots if s.claim is not None]
        for slot in self.slots:
            if slot.claim is not None:
                self.killed.append((slot.claim.task.id, reason))
                slot.claim = None
        return claims

    def retire_all(self, reason: str) -> None:
        pass

    def clear_pauses(self, reason: str) -> None:
        pass


class FakeClaimLoop:
    """The claim thread, without a thread or a server: ``claim`` does what one GET that brought a
    task does to the real gate, if the gate lets a claim out now."""

    def __init__(self, gate: ClaimGate, journal: Journal) -> None:
        self.gate = gate
        self.journal = journal
        self.started = False

    def start(self) -> None:
        self.started = True

    def is_alive(self) -> bool:
        return self.started

    def claim(self, task_id: str, task_type: str = "echo", params: Any = None) -> bool:
        if not self.gate.acquire(timeout=0):
            return False
        claim = Claim(new_key(), Task(id=task_id, task_type=task_type, params={} if params is None else params))
        self.journal.record(claim.key, {"id": task_id, "task_type": task_type, "params": claim.task.params})
        self.gate.release(claim)
        return True


class FakeSubmitLoop:
    """The submit thread, without a server: results wait in memory and persist() puts them in the
    real outbox, as SubmitLoop does when the server is away or the worker stops."""

    def __init__(self, outbox: Outbox, journal: Journal) -> None:
        self.outbox = outbox
        self.journal = journal
        self.fresh: dict[str, tuple[bytes, Any]] = {}
        self.handed: list[tuple[Any, bytes]] = []  # (task id, body), every result in order
        self.closing = threading.Event()
        self.started = False

    def start(self) -> None:
        self.started = True

    def is_alive(self) -> bool:
        return self.started and not self.closing.is_set()

    def hand_over(self, key: str, body: bytes, task_id: Any) -> None:
        self.fresh[key] = (body, task_id)
        self.handed.append((task_id, body))

    def persist(self, force: bool = False) -> int:
        count = 0
        for key, (body, _) in list(self.fresh.items()):
            self.outbox.put(key, body)
            self.journal.clear(key)
            del self.fresh[key]
            count += 1
        return count

    def join(self, timeout: float | None = None) -> None:
        pass

    def in_memory(self) -> int:
        return len(self.fresh)

    def describe(self) -> dict[str, Any]:
        return {"retrying": 0, "refused": 0, "retrying_because": None, "next_retry_in": None,
                "retry_window_days": 7.0, "dead_letters": 0, "dead_letters_because": None}

    def backlog_bytes(self) -> int:
        return sum(len(body) for body, _ in self.fresh.values())


class FakeFlusher:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class FakeGuest:
    def __init__(self) -> None:
        self.pause: str | None = None  # set by a test: the owner wants no new work

    def describe_start(self) -> None:
        pass

    def paused(self, now: float) -> str | None:
        return self.pause

    def state(self, now: float) -> dict[str, Any]:
        return {"paused": self.pause is not None, "why": self.pause}


class FakeCpuCap:
    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"percent": 0.0, "enforced_by": None, "not_enforced_because": None}


class FakeUpdates:
    """An updater that holds claims while ``holding`` says why, and records the update tasks it gets."""

    def __init__(self) -> None:
        self.holding: str | None = None
        self.received: list[Claim] = []
        self.handed_over = False

    def hold(self, now: float) -> str | None:
        return self.holding

    def on_start(self, now: float) -> int | None:
        return None

    def wants_health_check(self) -> bool:
        return False

    def report_previous(self, now: float) -> None:
        pass

    def on_stop(self, now: float) -> None:
        pass

    def receive(self, claim: Claim, now: float) -> None:
        self.received.append(claim)

    def step(self, now: float, came_up: bool = True) -> None:
        pass


def rig_settings(home: Path, **env: str) -> Settings:
    """The shipped config.py's settings with a fast, quiet loop: no watchdog thread, no retry pauses."""
    base = {"HIVE_WATCHDOG_GRACE": "0", "HIVE_TASK_ERROR_SLEEP": "0", "HIVE_SHUTDOWN_GRACE": "10",
            "HIVE_POOL_SIZE": "2"}
    return settings_mod.load(config, home, {"server_url": "http://127.0.0.1:9/api"}, environ={**base, **env})


@dataclass
class Rig:
    """An arbiter over fakes, with handles on each for the test."""

    arbiter: Arbiter
    clock: FakeClock
    pool: FakePool
    claimer: FakeClaimLoop
    submitter: FakeSubmitLoop
    guest: FakeGuest
    updates: Any  # FakeUpdates, or whatever the test's builder made
    home: Path

    def signal(self, signum: int = signal.SIGINT) -> None:
        """What Python's C-level handler does on a signal: its number, one byte on the wake-up socket."""
        self.arbiter.wakeup.writer.send(bytes([signum]))

    def close(self) -> None:
        """The journal of an arbiter that never ran to its end (its shutdown closes it)."""
        if self.arbiter.state is not Stage.STOPPED:
            self.arbiter.journal.close()


def make_rig(home: Path, settings: Settings | None = None, *, starts: bool = True,
             updates: Callable[[Settings, Worker], Any] | None = None, registry: frozenset[str] = frozenset({"echo"})) -> Rig:
    settings = settings or rig_settings(home)
    clock = FakeClock()
    life = Lifecycle(settings.shutdown_grace)
    wakeup = WakeSocket()
    journal = Journal(settings.home)
    outbox = Outbox(settings.home, int(settings.outbox_max_mb * 1024 * 1024))
    gate = ClaimGate(on_claim=wakeup.wake, exclusive=frozenset({UPDATE_TASK}))
    made: dict[str, Any] = {}

    def pool(on_result: ResultSink) -> FakePool:
        made["pool"] = FakePool(on_result, clock, size=settings.pool_size, starts=starts)
        return made["pool"]

    def fake_updates(worker: Worker) -> Any:
        made["updates"] = FakeUpdates() if updates is None else updates(settings, worker)
        return made["updates"]

    claimer, submitter, guest = FakeClaimLoop(gate, journal), FakeSubmitLoop(outbox, journal), FakeGuest()
    arbiter = Arbiter(settings, "w-test", "2.0.0", set(registry), Parts(
        life=life, wakeup=wakeup, pool=pool, updates=fake_updates, gate=gate, claimer=claimer, submitter=submitter,
        flusher=FakeFlusher(), journal=journal, outbox=outbox, disk=DiskGuard(journal.dir, outbox.dir),
        backoff=Backoff(cap=settings.time_error_sleep), status=Status(), guest=guest, cpucap=FakeCpuCap(),
        health=Health(), clock=clock))
    return Rig(arbiter, clock, made["pool"], claimer, submitter, guest, made["updates"], settings.home)


def real_updates(prepare: Callable[[Any], Any],
                 watch: Callable[[Worker], Worker] = lambda w: w) -> Callable[[Settings, Worker], UpdateCoordinator]:
    """A builder of the real UpdateCoordinator on the frozen build's path, with ``prepare`` instead
    of the download (it runs on the coordinator's own thread) and nothing ever launched."""
    def build(settings: Settings, worker: Worker) -> UpdateCoordinator:
        def launch(staged: Any, claim: Claim) -> None:
            raise AssertionError("a test never launches an updater")
        return UpdateCoordinator(settings, "2.0.0", "w-test", watch(worker), frozen=True, prepare=prepare,
                                 launch=launch)
    return build


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """For the one thing a rig does on a real thread (the updater's prepare)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)
