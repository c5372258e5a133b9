"""The supervision loop: one thread that owns the pool and takes every decision.

Two helper threads talk HTTP (claimer.py, submitter.py) so a slow server never
delays limit checks. The loop sleeps in one wait() on every executor pipe plus
a wake-up socket, so a finished task, a claimed task and a signal are all handled
at once, and limits are checked every LIMIT_CHECK_INTERVAL while tasks run.
A signal is one byte on that socket, its number, written by Python's C-level handler
(signal.set_wakeup_fd); the Python-level handler runs no Python code at all, so no lock
is taken and no handler can run inside another (a storm of signals once nested them to a
RecursionError). The loop reads the numbers and decides what they mean (Lifecycle.take_signals).

Its state is explicit: the lifecycle (lifecycle.py: stages, allowed moves, stop requests) and
the claim-hold decision (hold.py, pure). It is built from its parts (parts.py):
build_arbiter makes the production ones; tests give fakes and run the loop in-process.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from typing import Protocol

import orjson

from common.safetext import redact_url
from common.vocabulary import FailureKind, failure_json
from supervisor.guest import Guest
from supervisor.hold import GateInputs, Notice, claim_hold, down_too_long
from supervisor.lifecycle import Lifecycle, Stage
from supervisor.model import Claim, result_body
from supervisor.net.backoff import Backoff
from supervisor.net.claimer import ClaimGate, ClaimLoop
from supervisor.net.client import HiveClient
from supervisor.net.submitter import SubmitLoop
from supervisor.observe import diagnostics, liveness
from supervisor.observe.status import Snapshot, Status
from supervisor.parts import Parts, ResultSink
from supervisor.pool.cpucap import CpuCap
from supervisor.pool.pool import Pool, executor_init
from supervisor.settings import Settings, unknown_limit_types
from supervisor.store.diskguard import DiskGuard
from supervisor.store.flusher import Flusher
from supervisor.store.journal import Journal
from supervisor.store.outbox import Outbox
from supervisor.store.recovery import recover_interrupted
from supervisor.update.coordinator import TASK_TYPE as UPDATE_TASK
from supervisor.update.coordinator import UpdateCoordinator, Worker
from supervisor.update.health import StartHealth

log = logging.getLogger("hive.supervisor")

IDLE_TICK = 1.0
# Ctrl+C, SIGTERM (systemd, Task Scheduler's end) and Ctrl+Break on Windows: the first stops, a second kills.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM} | ({signal.SIGBREAK} if hasattr(signal, "SIGBREAK") else set()))
WAKE = b"!"  # wake()'s byte; never a signal number (those are below 33)
# A C callable that takes (signum, frame) and does nothing: the Python-level handler (install_signals).
IGNORE_IN_PYTHON = slice
RESULT_PREVIEW_BYTES = 300  # --dev shows this much of each result
STATUS_EVERY = 2.0


class TurnHook(Protocol):
    """Code that runs on the loop's thread every turn (the dev reloader): see Arbiter.add_turn_hook."""

    def on_turn(self) -> None: ...

    def due_soon(self) -> bool: ...

    def on_stop(self) -> None:
        """The worker is stopping: release threads and handles (a thread left running would keep
        the process from exiting)."""


class WakeSocket:
    """The wake-up channel: one byte on a non-blocking socket, written without any lock, so the
    signal handlers, the console handler and the helper threads may all write at once.
    A socket, not a pipe: signal.set_wakeup_fd takes only sockets on Windows."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def wake(self) -> None:
        """Interrupt the loop's wait: one byte, no lock, so it is safe from any thread and from a
        signal handler (a lock here once deadlocked the main thread when a second signal arrived
        while the first one's handler held it)."""
        try:
            self.writer.send(WAKE)
        except OSError:  # full: a wake-up is pending anyway; closed: the loop is gone
            pass

    def drain(self) -> list[int]:
        """Empty the socket; the stop signals' numbers set_wakeup_fd wrote among wake()'s bytes, in order."""
        found: list[int] = []
        try:
            while data := self.reader.recv(4096):
                if data.count(WAKE) != len(data):  # mostly wake()'s bytes: no Python loop
                    found.extend(b for b in data if b in STOP_SIGNALS)
        except OSError:  # BlockingIOError: drained
            pass
        return found


class Arbiter:
    def __init__(self, settings: Settings, worker_id: str, version: str, registry_names: set[str], parts: Parts,
                 show_results: bool = False) -> None:
        """The loop over its parts (build_arbiter makes the production ones); it builds none itself
        but the two that answer through it: the pool (given on_result) and the updater (given its Worker)."""
        self.settings = settings
        self.home = settings.home
        self.worker_id = worker_id
        self.version = version
        self.registry_names = set(registry_names)
        self.life = parts.life
        self.wakeup = parts.wakeup
        self.clock = parts.clock
        self.gate = parts.gate
        self.claimer = parts.claimer
        self.submitter = parts.submitter
        self.flusher = parts.flusher
        self.journal = parts.journal
        self.outbox = parts.outbox
        self.disk = parts.disk
        self.backoff = parts.backoff
        self.status = parts.status
        self.guest = parts.guest
        self.cpucap = parts.cpucap
        self.health = parts.health  # uptime, failures by kind, the log tail
        self.pool = parts.pool(self.on_result)
        self.updates = parts.updates(Worker(
            in_flight=lambda: (len(self.pool.busy()), self.gate.outstanding()),
            kill_running=lambda why: self.pool.kill_running(why),
            answer=lambda claim, ok, raw: self.on_result(claim, ok, raw, None if ok else FailureKind.UPDATE_FAILED, 0.0),
            fail=lambda claim, error: self.fail_now(claim, error, FailureKind.UPDATE_FAILED),
            persist=lambda: self.submitter.persist(),
            forget=lambda claim: self.journal.clear(claim.key),
            stop=self.request_stop,
            wake=self.wake,
        ))
        # Signals received, in order, as read from the wake-up socket (the loop's thread only).
        self.signals: list[int] = []
        self.turn_hooks: list[TurnHook] = []  # only through add_turn_hook
        # The claim-hold decision's memory between turns (claim_hold; the loop's thread only):
        self.not_claiming: str | None = "starting"  # why no claim can go out now (status.json)
        self.outbox_full_said = False
        self.down_since: float | None = None  # monotonic since when no executor is up (None: one is)
        self.lent_at = float("-inf")  # when the last claim was lent to a worker with no executor up
        self.lending = False  # the gate has a slot lent (lend_a_claim)
        self.last_status = 0.0
        self.healthy = False  # once: the previous update's outcome is reported (check_health)
        self.start_health = StartHealth(settings.pool_size, wanted=False)  # set again in run()
        self.watchdog: liveness.Watchdog | None = None
        self.show_results = show_results  # --dev: a preview of each result in the log (the fleet's log stays as it is)
        self.tasks_ok = 0  # for --dev's session summary

    @property
    def state(self) -> Stage:
        return self.life.stage

    # ---- signals -------------------------------------------------------------------------------

    def wake(self) -> None:
        self.wakeup.wake()

    def install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # Python's C-level handler writes the signal's number to the socket the moment it arrives:
        # that byte is the whole record of the signal, and it wakes the loop's wait. The handler
        # Python then calls must exist (without one the signal would kill or raise) but does
        # nothing, and is a C function, not Python code: a Python handler can be entered again
        # between any two of its bytecodes, and a storm of SIGINT/SIGTERM nested one inside
        # another until RecursionError ended the worker.
        signal.set_wakeup_fd(self.wakeup.writer.fileno(), warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            signal.signal(signum, IGNORE_IN_PYTHON)
        if sys.platform == "win32":
            self._install_console_close_handler()

    def _install_console_close_handler(self) -> None:
        """Console close, log-off and shutdown on Windows are not signals Python maps.

        Windows ends the process a few seconds after the handler returns, so it waits
        (bounded) for the loop to persist results and stop the executors.
        """
        if sys.platform != "win32":  # called only there; this tells the type checker too
            return
        import ctypes

        @ctypes.WINFUNCTYPE(ctypes.c_int, ctypes.c_uint)
        def handler(event: int) -> int:
            if event in (2, 5, 6):  # CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT
                self.request_stop({2: "console closed", 5: "log-off", 6: "system shutdown"}[event])
                self.life.force()  # no time for a grace period: kill, persist, exit
                self.wake()
                self.life.stopped.wait(4.5)
                return 1
            return 0  # Ctrl+C / Ctrl+Break: the signal handlers do it

        self._console_handler = handler  # keep a reference: ctypes must not free the callback
        if ctypes.windll.kernel32.SetConsoleCtrlHandler(handler, 1):
            log.debug("console handler registered: console close, log-off and shutdown stop the worker")
        else:
            log.warning("cannot register the console handler (WinError %d): closing the console, log-off "
                        "or shutdown will end the worker without its grace period", ctypes.GetLastError())

    def request_stop(self, why: str) -> None:
        """Safe from any thread: the loop stops claiming and stops the worker at its next turn."""
        self.life.request_stop(why)

    # ---- results -------------------------------------------------------------------------------

    def on_result(self, claim: Claim, ok: bool, raw: bytes, kind: FailureKind | None, seconds: float) -> None:
        if self.start_health.is_probe(claim):  # the built-in probe: never the server's business
            self.start_health.probe_done(ok, "" if ok else raw.decode("utf-8", "replace")[:300], self.clock())
            return
        task = claim.task
        if ok:
            self.tasks_ok += 1
            log.info("task %r (%s) succeeded in %.2f s", task.id, task.task_type, seconds)
            if self.show_results:
                cut = len(raw) > RESULT_PREVIEW_BYTES
                log.info("task %r result: %s%s", task.id,
                         raw[:RESULT_PREVIEW_BYTES].decode("utf-8", "replace"), "..." if cut else "")
        else:
            try:
                error = orjson.loads(raw).get("error", "")
            except (orjson.JSONDecodeError, AttributeError):
                error = ""
            log.warning("task %r (%s) failed in %.2f s, kind %s: %s", task.id, task.task_type, seconds, kind, error)
            self.health.failed(kind)
        self.submitter.hand_over(claim.key, result_body(task.id_bytes(), self.worker_id, ok, raw), task.id)

    def fail_now(self, claim: Claim, error: str, kind: FailureKind) -> None:
        """Answer a task without touching an executor (unknown type, malformed, update)."""
        self.on_result(claim, False, failure_json(error, kind), kind, 0.0)

    def take_claims(self) -> None:
        while True:
            claim = self.gate.take(close=self.lending)
            if claim is None:
                return
            if self.lending:
                self.lending, self.lent_at = False, self.clock()
            try:
                if not self.place(claim):
                    self.gate.put_back(claim)  # no idle executor after all
                    return
            except Exception as exc:  # noqa: BLE001 - one task's surprise fails that task, never the loop
                self.task_broke(claim, exc)

    def place(self, claim: Claim) -> bool:
        """Answer or dispatch one claimed task; False if no executor could take it now."""
        task = claim.task
        if claim.malformed:
            self.fail_now(claim, claim.malformed, claim.kind)
        elif task.task_type == UPDATE_TASK:
            self.updates.receive(claim, self.clock())
        elif task.task_type == diagnostics.TASK_TYPE:
            # Answered here, never by an executor: it works when task code or executors are broken.
            self.answer_diagnostics(claim)
        elif task.task_type not in self.registry_names:
            self.fail_now(claim, f"unknown task type {task.task_type!r} (not in this worker's TASK_REGISTRY)",
                          FailureKind.UNKNOWN_TASK)
        elif task.params is None or not isinstance(task.params, dict):
            self.fail_now(claim, f"params must be a JSON object, got {type(task.params).__name__}",
                          FailureKind.BAD_PARAMS)
        elif (broken := self.cannot_run()) is not None:
            self.fail_now(claim, f"this worker cannot run tasks: {broken}", FailureKind.EXCEPTION)
        else:
            return self.pool.dispatch(claim)
        return True

    def cannot_run(self) -> str | None:
        """Why no task can run here (no executor up for NO_EXECUTOR_CLAIM_INTERVAL), or None."""
        now = self.clock()
        if self.down_since is None or not down_too_long(now - self.down_since, self.settings.no_executor_claim_interval):
            return None
        return (f"none of its {self.settings.pool_size} executor(s) could start for "
                f"{now - self.down_since:.0f} s (last error: {self.pool.last_start_error or 'none'})")

    def task_broke(self, claim: Claim, exc: Exception) -> None:
        """An unexpected error while handling one claimed task: that task fails, the loop goes on."""
        text = f"the worker could not handle this task: {type(exc).__name__}: {exc}"
        log.error("task %r: %s; failing it", claim.task.id, text)
        log.debug("task handling failure", exc_info=True)
        try:
            self.fail_now(claim, text, FailureKind.EXCEPTION)
        except Exception as again:  # noqa: BLE001 - not even a failure can be built: it cannot be answered
            log.error("task %r cannot be answered (%s: %s); dropped", claim.task.id, type(again).__name__, again)
            try:
                self.journal.clear(claim.key)  # else every restart would try to report it again
            except OSError:
                pass

    def answer_diagnostics(self, claim: Claim) -> None:
        try:
            raw = diagnostics.answer(self.snapshot(), self.settings, self.health, self.outbox)
        except Exception as exc:  # noqa: BLE001 - a bug in a report must not stop the worker
            log.exception("task %r (%s): cannot collect the diagnostics", claim.task.id, claim.task.task_type)
            self.fail_now(claim, f"diagnostics failed: {type(exc).__name__}: {exc}", FailureKind.EXCEPTION)
            return
        log.info("task %r (%s): answered with this worker's diagnostics (%d bytes)", claim.task.id,
                 claim.task.task_type, len(raw))
        self.on_result(claim, True, raw, None, 0.0)

    # ---- self-update: drain, prepare (off-thread), hand over, exit (supervisor/update/coordinator.py)

    def check_health(self) -> None:
        """Healthy means doing work (update/health.py): every executor has started and imported the
        registry, the probe made the round trip, and the server answered. Then report how a
        previous update ended."""
        if self.healthy:
            return
        now = self.clock()
        probe = self.start_health.probe_to_send((s.index for s in self.pool.slots if s.ready), now)
        if probe is not None and not self.pool.dispatch(probe):
            self.start_health.not_sent()
        if not self.start_health.came_up or self.status.last_contact is None:
            return
        self.healthy = True
        self.updates.report_previous(now)

    # ---- extension points: the dev reloader uses these, never the attributes behind them ------

    def add_turn_hook(self, hook: TurnHook) -> None:
        """Call ``hook.on_turn()`` every turn, before the pool is maintained (so retirements it asks
        for take effect that turn); while ``hook.due_soon()`` is true, turns come every
        LIMIT_CHECK_INTERVAL instead of every IDLE_TICK. An exception in a hook is logged, never
        fatal to the turn."""
        self.turn_hooks.append(hook)

    def reload_tasks(self, names: set[str], reason: str) -> tuple[set[str], set[str]]:
        """New task code (from the loop's thread): claims are checked against ``names`` from now on
        and every executor is replaced as soon as it is idle, so running tasks finish with the old
        code; a slot pausing after a failed task takes work again (the fix may be this code).
        Returns the (added, removed) task types."""
        added, removed = names - self.registry_names, self.registry_names - names
        self.registry_names = set(names)
        self.pool.retire_all(reason)
        self.pool.clear_pauses(reason)
        return added, removed

    def _run_turn_hooks(self, stopping: bool = False) -> None:
        for hook in self.turn_hooks:
            try:
                hook.on_stop() if stopping else hook.on_turn()
            except Exception as exc:  # noqa: BLE001 - a dev tool's bug must not cost this turn's work
                log.error("turn hook %s: unexpected %s: %s", type(hook).__name__, type(exc).__name__, exc)
                log.debug("turn hook failure", exc_info=True)

    # ---- the loop ------------------------------------------------------------------------------

    def run(self, signals: bool = True) -> int:
        """The worker, from start to stop; its exit status. ``signals``: take the process's stop
        signals (tests that run the loop in pytest's own process leave them to pytest)."""
        if signals:
            self.install_signals()
        self.health.install()
        log.info("worker %s version %s starting: server %s, pool of %d, home %s", self.worker_id, self.version,
                 redact_url(self.settings.server_url), self.settings.pool_size, self.home)
        rolled_back = self.updates.on_start(self.clock())
        if rolled_back is not None:
            return rolled_back  # the previous binary is back in place: the next start runs it
        # Healthy means doing work (update/health.py), checked when an update or a probation needs it.
        self.start_health = StartHealth(self.settings.pool_size, self.updates.wants_health_check())
        reported = recover_interrupted(self.journal, self.outbox, self.worker_id)
        if len(self.outbox):
            log.info("%d result(s) from earlier runs wait in the outbox (%d interrupted task(s) among them)",
                     len(self.outbox), reported)
        if diagnostics.TASK_TYPE in self.registry_names:
            log.warning("TASK_REGISTRY has an entry %r: it is never called, the supervisor answers that task type "
                        "itself (built-in)", diagnostics.TASK_TYPE)
        for task_type in unknown_limit_types(self.settings, self.registry_names):
            log.warning("TASK_LIMITS has an entry for %r, which is not in TASK_REGISTRY: its limits never apply "
                        "(a typo, or a task that was removed?)", task_type)
        self.guest.describe_start()
        self.cpucap.start()  # before the first executor: each one is placed under it as it starts
        self.pool.start()
        self.flusher.start()
        self.submitter.start()
        self.claimer.start()
        self.watchdog = liveness.start(self.settings, IDLE_TICK, {liveness.SUPERVISION: threading.current_thread(),
                                                                   liveness.CLAIM: self.claimer,
                                                                   liveness.SUBMIT: self.submitter})
        self.life.enter(Stage.RUNNING, self.clock(), "running: %d executor(s) starting; claiming as they become ready",
                        self.settings.pool_size)
        try:
            self.loop()
        finally:
            self.shutdown()
        return 0

    def loop(self) -> None:
        while True:
            liveness.beat(liveness.SUPERVISION)
            now = self.clock()
            try:
                self.turn(now)
            except Exception as exc:  # noqa: BLE001 - the loop that owns the pool must outlive any surprise
                log.error("supervision loop: unexpected %s: %s; going on", type(exc).__name__, exc)
                log.debug("supervision loop failure", exc_info=True)
                time.sleep(0.1)  # a failure that repeats every turn must not spin a core
            self.life.take_signals(self.signals)
            if self.life.stop_requested.is_set() and self.stop_turn():
                return

    def stop_turn(self) -> bool:
        """A turn after a stop was asked for: whether the loop is done (the shutdown follows)."""
        if self.life.stage is Stage.RUNNING:
            # Said here, where the loop takes the first stop request (never in a signal handler).
            running = len(self.pool.busy()) + self.gate.outstanding()
            again = ("; a second Ctrl+C (or SIGTERM) kills them now"
                     if running and str(self.life.stop_reason).startswith("signal") else "")
            self.life.enter(Stage.STOPPING, self.clock(), "stopping (%s): no more claims; %d task(s) get up to "
                            "%.0f s to finish%s", self.life.stop_reason, running, self.settings.shutdown_grace, again)
        if self.updates.handed_over:
            return True
        why = self.life.must_kill(self.clock())
        if why is not None:
            killed = self.pool.kill_running(why)
            if killed:
                log.warning("%d task(s) killed (%s); they will be reported interrupted at next start", len(killed), why)
            return True
        return not self.pool.busy() and self.gate.outstanding() == 0

    def turn(self, now: float) -> None:
        """One turn: handle frames and wake-ups, place claims, check limits, keep the pool up."""
        soon = self.pool.busy() or any(hook.due_soon() for hook in self.turn_hooks)
        timeout = self.settings.limit_check_interval if soon else IDLE_TICK
        if self.pool.serve(timeout, (self.wakeup.reader,)):
            self.signals.extend(self.wakeup.drain())
        self.take_claims()  # also while stopping: tasks claimed just before still run
        self.pool.check_limits()
        self._run_turn_hooks()  # before maintain(): a reload's retirements then take effect this turn
        self.pool.maintain()
        self.updates.step(self.clock(), self.start_health.came_up)
        self.check_health()
        self.update_gate(now)

    def update_gate(self, now: float) -> None:
        """Apply the claim-hold decision (claim_hold): say what changed, set the gate, write status.json."""
        mono = self.clock()
        paused = self.guest.paused(mono)  # read every turn, so its changes are logged when they happen
        ready = self.pool.ready_count(mono)
        if self.pool.any_up(mono):
            self.down_since = None
        elif self.down_since is None:
            self.down_since = mono
        answer = claim_hold(GateInputs(
            now=mono, stopping=self.life.stop_requested.is_set(), update_hold=self.updates.hold(mono),
            disk_problem=self._disk_problem, outbox_full=self.outbox.full(extra=self.submitter.backlog_bytes()),
            outbox_full_said=self.outbox_full_said, paused=paused, ready=ready, down_since=self.down_since,
            lent_at=self.lent_at, lend_every=self.settings.no_executor_claim_interval, lending=self.lending,
            backoff_left=self.backoff.remaining(), cannot_run=self.cannot_run()))
        for notice in answer.notices:
            self._say(notice, mono)
        self.outbox_full_said = answer.outbox_full_said
        self.lending = answer.lending
        self.gate.set_ready(answer.offer, answer.hold)
        self.not_claiming = answer.not_claiming
        if now - self.last_status >= STATUS_EVERY:
            self.write_status()
            self.last_status = now

    def _disk_problem(self) -> str | None:
        if self.disk.writable():
            return None
        return self.disk.problem or "disk not writable"  # as the guard logged it; it logs the recovery too

    def _say(self, notice: Notice, now: float) -> None:
        if notice is Notice.OUTBOX_FULL:
            log.error("results waiting to be posted hold %d bytes, over OUTBOX_MAX_MB=%g: not claiming until "
                      "results are delivered", self.outbox.size() + self.submitter.backlog_bytes(),
                      self.settings.outbox_max_mb)
        elif notice is Notice.OUTBOX_OK:
            log.info("outbox below its cap again: claiming resumes")
        elif notice is Notice.LENDING:
            log.warning("no executor could start for %.0f s: claiming one task (answered by the supervisor, or "
                        "failed naming why); next in %.0f s", now - (self.down_since or now),
                        self.settings.no_executor_claim_interval)

    def snapshot(self) -> Snapshot:
        """The worker now, for status.json and worker_diagnostics: the one place it is read together."""
        now = self.clock()
        return Snapshot(
            taken=now, worker_id=self.worker_id, version=self.version,
            server_url=redact_url(self.settings.server_url), state=str(self.life.stage),
            slots=self.pool.describe(now), outbox_results=len(self.outbox), outbox_bytes=self.outbox.size(),
            delivery=self.submitter.describe(), not_claiming=self.not_claiming, cannot_run_tasks=self.cannot_run(),
            pause=self.guest.state(now), cpu_cap=self.cpucap.describe(),
            last_contact=self.status.last_contact, last_error=self.status.last_error,
            last_error_at=self.status.last_error_at, results_delivered=self.status.delivered)

    def write_status(self) -> None:
        try:
            self.status.write(self.home, self.snapshot())
        except OSError as exc:
            log.debug("cannot write status file: %s", exc)

    def shutdown(self) -> None:
        self.life.request_stop("the supervision loop ended")  # a no-op after a stop request: its reason stays
        if self.life.stage is Stage.RUNNING:  # the loop ended without a stop request (an exit raised in it)
            self.life.enter(Stage.STOPPING, self.clock(), "stopping (%s)", self.life.stop_reason)
        self._run_turn_hooks(stopping=True)
        self.updates.on_stop(self.clock())
        self.pool.stop()
        self.cpucap.close()
        persisted = self.submitter.persist()
        self.submitter.closing.set()
        # Give waiting results a moment to reach the server; whatever is left stays on disk.
        self.submitter.join(timeout=min(5.0, self.settings.submit_timeout))
        self.submitter.persist(force=True)
        lost = self.submitter.in_memory()
        if lost:
            log.error("%d result(s) could neither be posted nor written to disk: lost with this exit (a task "
                      "whose claim reached the journal is reported interrupted at the next start)", lost)
        self.flusher.stop()
        self.journal.close()
        self.not_claiming = "stopped"
        if self.watchdog is not None:
            self.watchdog.stop()
        self.life.enter(Stage.STOPPED, self.clock(), "stopped; %d result(s) wait in the outbox for the next start%s",
                        len(self.outbox), f" ({persisted} persisted at shutdown)" if persisted else "")
        self.write_status()
        self.health.uninstall()
        sys.stdout.flush()


def build_arbiter(settings: Settings, worker_id: str, version: str, registry_names: set[str],
                  config_path: str | None = None, debug: bool = False) -> Arbiter:
    """The production arbiter: real executors, the HTTP threads, the journal and outbox in the home."""
    life = Lifecycle(settings.shutdown_grace)
    wakeup = WakeSocket()

    def client() -> HiveClient:
        return HiveClient(settings.server_url, worker_id, version, settings.get_task_timeout,
                          settings.submit_timeout, settings.get_task_max_bytes)

    status = Status()
    backoff = Backoff(cap=settings.time_error_sleep)
    journal = Journal(settings.home)
    outbox = Outbox(settings.home, int(settings.outbox_max_mb * 1024 * 1024))
    disk = DiskGuard(journal.dir, outbox.dir)
    gate = ClaimGate(on_claim=wakeup.wake, exclusive=frozenset({UPDATE_TASK}))  # no claim after an update's
    cpucap = CpuCap(settings.cpu_cap_percent, priority=settings.executor_priority, executors=settings.pool_size)
    flusher = Flusher(journal)

    def pool(on_result: ResultSink) -> Pool:
        return Pool(settings.pool_size, executor_init(settings, config_path, version, debug),
                    settings, on_result, place=cpucap.adopt)

    def updates(worker: Worker) -> UpdateCoordinator:
        return UpdateCoordinator(settings, version, worker_id, worker)

    return Arbiter(settings, worker_id, version, registry_names, Parts(
        life=life, wakeup=wakeup, pool=pool, updates=updates, gate=gate,
        submitter=SubmitLoop(client(), outbox, journal, flusher, backoff, status, disk,
                             retry_window=settings.result_retry_days * 86400),
        claimer=ClaimLoop(client(), gate, journal, flusher, backoff, settings.no_task_sleep, life.stop_requested,
                          status, disk),
        flusher=flusher, journal=journal, outbox=outbox, disk=disk, backoff=backoff, status=status,
        guest=Guest(settings, settings.home),  # when the PC's owner wants no new work
        cpucap=cpucap, health=diagnostics.Health()), show_results=debug)
