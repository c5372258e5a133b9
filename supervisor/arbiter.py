"""The supervision loop: one thread that owns the pool and takes every decision.

Two helper threads talk HTTP (claimer.py, submitter.py) so a slow server never
delays limit checks. The loop sleeps in one wait() on every executor pipe plus
a wake-up socket, so a finished task, a claimed task and a signal are all handled
at once, and limits are checked every LIMIT_CHECK_INTERVAL while tasks run.
A signal is one byte on that socket, its number, written by Python's C-level handler
(signal.set_wakeup_fd); the Python-level handler runs no Python code at all, so no lock
is taken and no handler can run inside another (a storm of signals once nested them to a
RecursionError). The loop reads the numbers and decides what they mean (take_signals).
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
from supervisor.model import Claim, result_body
from supervisor.net.backoff import Backoff
from supervisor.net.claimer import ClaimGate, ClaimLoop
from supervisor.net.client import HiveClient
from supervisor.net.submitter import SubmitLoop
from supervisor.observe import diagnostics, liveness
from supervisor.observe.status import Status, this_process
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


def lend_a_claim(down_for: float | None, since_lent: float, interval: float) -> bool:
    """Whether a worker with no executor up may claim one task now: after ``interval`` seconds with
    none up (``down_for``, None while one is up) and ``interval`` after the last one it claimed
    so. Such a task is answered by the supervisor itself (worker_diagnostics, update_worker) or
    failed at once naming why, never run: the server can still reach and repair this PC."""
    return interval > 0 and down_for is not None and down_for >= interval and since_lent >= interval


class TurnHook(Protocol):
    """Code that runs on the loop's thread every turn (the dev reloader): see Arbiter.add_turn_hook."""

    def on_turn(self) -> None: ...

    def due_soon(self) -> bool: ...

    def on_stop(self) -> None:
        """The worker is stopping: release threads and handles (a thread left running would keep
        the process from exiting)."""


class Arbiter:
    def __init__(self, settings: Settings, worker_id: str, version: str, registry_names: set[str],
                 config_path: str | None = None, debug: bool = False) -> None:
        self.settings = settings
        self.home = settings.home
        self.worker_id = worker_id
        self.version = version
        self.registry_names = set(registry_names)
        self.stop_event = threading.Event()  # stop claiming
        self.stop_reason = "requested"
        self.stopped = threading.Event()  # shutdown finished
        self.state = "starting"
        self.force = False
        # Signals received, in order, as read from the wake-up socket (the loop's thread only).
        self.signals: list[int] = []
        self.signals_taken = 0
        # The wake-up channel: one byte on a non-blocking socket, written without any lock, so the
        # signal handlers, the console handler and the helper threads may all write at once.
        # A socket, not a pipe: signal.set_wakeup_fd takes only sockets on Windows.
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.status = Status()
        self.backoff = Backoff(cap=settings.time_error_sleep)
        self.journal = Journal(self.home)
        self.outbox = Outbox(self.home, int(settings.outbox_max_mb * 1024 * 1024))
        self.disk = DiskGuard(self.journal.dir, self.outbox.dir)
        self.gate = ClaimGate(on_claim=self.wake, exclusive=frozenset({UPDATE_TASK}))  # no claim after it
        self.turn_hooks: list[TurnHook] = []  # only through add_turn_hook
        self.health = diagnostics.Health()  # uptime, failures by kind, the log tail
        self.guest = Guest(settings, self.home)  # when the PC's owner wants no new work
        self.cpucap = CpuCap(settings.cpu_cap_percent, priority=settings.executor_priority,
                             executors=settings.pool_size)
        self.not_claiming: str | None = "starting"  # why no claim can go out now (status.json)
        self.down_since: float | None = None  # monotonic since when no executor is up (None: one is)
        self.lent_at = float("-inf")  # when the last claim was lent to a worker with no executor up
        self.lending = False  # the gate has a slot lent (lend_a_claim)
        self.pool = Pool(settings.pool_size, executor_init(settings, config_path, version, debug),
                         settings, self.on_result, place=self.cpucap.adopt)
        self.flusher = Flusher(self.journal)
        self.submitter = SubmitLoop(self._client(), self.outbox, self.journal, self.flusher, self.backoff,
                                    self.status, self.disk, retry_window=settings.result_retry_days * 86400)
        self.claimer = ClaimLoop(self._client(), self.gate, self.journal, self.flusher, self.backoff,
                                 settings.no_task_sleep, self.stop_event, self.status, self.disk)
        self.last_status = 0.0
        self.outbox_full_logged = False
        self.updates = UpdateCoordinator(settings, version, worker_id, Worker(
            in_flight=lambda: (len(self.pool.busy()), self.gate.outstanding()),
            kill_running=lambda why: self.pool.kill_running(why),
            answer=lambda claim, ok, raw: self.on_result(claim, ok, raw, None if ok else FailureKind.UPDATE_FAILED, 0.0),
            fail=lambda claim, error: self.fail_now(claim, error, FailureKind.UPDATE_FAILED),
            persist=lambda: self.submitter.persist(),
            forget=lambda claim: self.journal.clear(claim.key),
            stop=self.request_stop,
            wake=self.wake,
        ))
        self.healthy = False
        self.start_health = StartHealth(settings.pool_size, wanted=False)  # set again in run()
        self.watchdog: liveness.Watchdog | None = None
        self.show_results = debug  # --dev: a preview of each result in the log (the fleet's log stays as it is)
        self.tasks_ok = 0  # for --dev's session summary

    def _client(self) -> HiveClient:
        return HiveClient(self.settings.server_url, self.worker_id, self.version,
                          self.settings.get_task_timeout, self.settings.submit_timeout,
                          self.settings.get_task_max_bytes)

    # ---- signals -------------------------------------------------------------------------------

    def wake(self) -> None:
        """Interrupt the loop's wait: one byte, no lock, so it is safe from any thread and from a
        signal handler (a lock here once deadlocked the main thread when a second signal arrived
        while the first one's handler held it)."""
        try:
            self.wake_w.send(WAKE)
        except OSError:  # full: a wake-up is pending anyway; closed: the loop is gone
            pass

    def _drain_wakeups(self) -> None:
        """Empty the wake-up socket, keeping the signal numbers set_wakeup_fd wrote among wake()'s bytes."""
        try:
            while data := self.wake_r.recv(4096):
                if data.count(WAKE) != len(data):  # mostly wake()'s bytes: no Python loop
                    self.signals.extend(b for b in data if b in STOP_SIGNALS)
        except OSError:  # BlockingIOError: drained
            pass

    def install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # Python's C-level handler writes the signal's number to the socket the moment it arrives:
        # that byte is the whole record of the signal, and it wakes the loop's wait. The handler
        # Python then calls must exist (without one the signal would kill or raise) but does
        # nothing, and is a C function, not Python code: a Python handler can be entered again
        # between any two of its bytecodes, and a storm of SIGINT/SIGTERM nested one inside
        # another until RecursionError ended the worker.
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            signal.signal(signum, IGNORE_IN_PYTHON)
        if sys.platform == "win32":
            self._install_console_close_handler()

    def _install_console_close_handler(self) -> None:
        """Console close, log-off and shutdown on Windows are not signals Python maps.

        Windows ends the process a few seconds after the handler returns, so it waits
        (bounded) for the loop to persist results and stop the executors.
        """
        import ctypes

        @ctypes.WINFUNCTYPE(ctypes.c_int, ctypes.c_uint)
        def handler(event: int) -> int:
            if event in (2, 5, 6):  # CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT
                self.request_stop({2: "console closed", 5: "log-off", 6: "system shutdown"}[event])
                self.force = True  # no time for a grace period: kill, persist, exit
                self.wake()
                self.stopped.wait(4.5)
                return 1
            return 0  # Ctrl+C / Ctrl+Break: the signal handlers do it

        self._console_handler = handler  # keep a reference: ctypes must not free the callback
        if ctypes.windll.kernel32.SetConsoleCtrlHandler(handler, 1):
            log.debug("console handler registered: console close, log-off and shutdown stop the worker")
        else:
            log.warning("cannot register the console handler (WinError %d): closing the console, log-off "
                        "or shutdown will end the worker without its grace period", ctypes.GetLastError())

    def take_signals(self) -> None:
        """On the loop's thread: the first signal asks for a graceful stop, any later one forces it."""
        count = len(self.signals)
        if count == self.signals_taken:
            return
        if self.signals_taken == 0:
            self.request_stop(f"signal {signal.Signals(self.signals[0]).name}")
        if count > 1:
            self.force = True
        self.signals_taken = count

    def request_stop(self, why: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = why
            self.stop_event.set()

    # ---- results -------------------------------------------------------------------------------

    def on_result(self, claim: Claim, ok: bool, raw: bytes, kind: FailureKind | None, seconds: float) -> None:
        if self.start_health.is_probe(claim):  # the built-in probe: never the server's business
            self.start_health.probe_done(ok, "" if ok else raw.decode("utf-8", "replace")[:300], time.monotonic())
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
                self.lending, self.lent_at = False, time.monotonic()
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
            self.updates.receive(claim, time.monotonic())
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
        interval = self.settings.no_executor_claim_interval
        if self.down_since is None or interval <= 0 or time.monotonic() - self.down_since < interval:
            return None
        return (f"none of its {self.settings.pool_size} executor(s) could start for "
                f"{time.monotonic() - self.down_since:.0f} s (last error: {self.pool.last_start_error or 'none'})")

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
            raw = diagnostics.answer(self)
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
        now = time.monotonic()
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

    def run(self) -> int:
        self.install_signals()
        self.health.install()
        log.info("worker %s version %s starting: server %s, pool of %d, home %s", self.worker_id, self.version,
                 redact_url(self.settings.server_url), self.settings.pool_size, self.home)
        rolled_back = self.updates.on_start(time.monotonic())
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
        self.state = "running"
        try:
            self.loop()
        finally:
            self.shutdown()
        return 0

    def loop(self) -> None:
        grace_deadline: float | None = None
        while True:
            liveness.beat(liveness.SUPERVISION)
            now = time.monotonic()
            try:
                self.turn(now)
            except Exception as exc:  # noqa: BLE001 - the loop that owns the pool must outlive any surprise
                log.error("supervision loop: unexpected %s: %s; going on", type(exc).__name__, exc)
                log.debug("supervision loop failure", exc_info=True)
                time.sleep(0.1)  # a failure that repeats every turn must not spin a core
            self.take_signals()
            if self.stop_event.is_set():
                if grace_deadline is None:
                    grace_deadline = time.monotonic() + self.settings.shutdown_grace
                    self.state = "stopping"
                    running = len(self.pool.busy()) + self.gate.outstanding()
                    # Said here, where the loop takes the first stop request (never in a signal handler).
                    again = ("; a second Ctrl+C (or SIGTERM) kills them now"
                             if running and self.stop_reason.startswith("signal") else "")
                    log.info("stopping (%s): no more claims; %d task(s) get up to %.0f s to finish%s",
                             self.stop_reason, running, self.settings.shutdown_grace, again)
                if self.updates.handed_over:
                    return
                if self.force or time.monotonic() > grace_deadline:
                    why = "second interrupt" if self.force else f"SHUTDOWN_GRACE of {self.settings.shutdown_grace:g} s ran out"
                    killed = self.pool.kill_running(why)
                    if killed:
                        log.warning("%d task(s) killed (%s); they will be reported interrupted at next start",
                                    len(killed), why)
                    return
                if not self.pool.busy() and self.gate.outstanding() == 0:
                    return

    def turn(self, now: float) -> None:
        """One turn: handle frames and wake-ups, place claims, check limits, keep the pool up."""
        soon = self.pool.busy() or any(hook.due_soon() for hook in self.turn_hooks)
        timeout = self.settings.limit_check_interval if soon else IDLE_TICK
        if self.pool.serve(timeout, (self.wake_r,)):
            self._drain_wakeups()
        self.take_claims()  # also while stopping: tasks claimed just before still run
        self.pool.check_limits()
        self._run_turn_hooks()  # before maintain(): a reload's retirements then take effect this turn
        self.pool.maintain()
        self.updates.step(time.monotonic(), self.start_health.came_up)
        self.check_health()
        self.update_gate(now)

    def update_gate(self, now: float) -> None:
        mono = time.monotonic()
        paused = self.guest.paused(mono)  # read every turn, so its changes are logged when they happen
        hold = None
        if self.stop_event.is_set():
            hold = "stopping"
        elif update_hold := self.updates.hold(mono):
            hold = update_hold
        elif not self.disk.writable():
            hold = self.disk.problem or "disk not writable"  # as the guard logged it; it logs the recovery too
        elif self.outbox.full(extra=self.submitter.backlog_bytes()):
            hold = "outbox full"
            if not self.outbox_full_logged:
                log.error("results waiting to be posted hold %d bytes, over OUTBOX_MAX_MB=%g: not claiming until "
                          "results are delivered", self.outbox.size() + self.submitter.backlog_bytes(),
                          self.settings.outbox_max_mb)
                self.outbox_full_logged = True
        elif self.outbox_full_logged:
            log.info("outbox below its cap again: claiming resumes")
            self.outbox_full_logged = False
        hold = hold or (paused and f"paused: {paused}")
        ready = self.pool.ready_count(mono)
        if self.pool.any_up(mono):
            self.down_since = None
        elif self.down_since is None:
            self.down_since = mono
        lend = hold is None and ready == 0 and lend_a_claim(
            None if self.down_since is None else mono - self.down_since, mono - self.lent_at,
            self.settings.no_executor_claim_interval)
        if lend and not self.lending:
            log.warning("no executor could start for %.0f s: claiming one task (answered by the supervisor, or "
                        "failed naming why); next in %.0f s", mono - (self.down_since or mono),
                        self.settings.no_executor_claim_interval)
        self.lending = lend
        self.gate.set_ready(1 if lend else ready, hold)
        self.not_claiming = hold or self._waiting_for(ready)
        if now - self.last_status >= STATUS_EVERY:
            self.write_status()
            self.last_status = now

    def _waiting_for(self, ready: int) -> str | None:
        """Reasons the claim thread waits though nothing holds the gate (the one place they are named)."""
        wait = self.backoff.remaining()
        if wait > 0:
            return f"backing off after server trouble: next try in {wait:.0f} s"
        if self.lending:
            return None  # one claim lent to a worker whose executors cannot start
        if ready == 0:
            if (broken := self.cannot_run()) is not None:
                return f"this worker cannot run tasks: {broken}; one claim per {self.settings.no_executor_claim_interval:g} s"
            return "no idle executor (all busy, starting or pausing after a failure)"
        return None

    def write_status(self) -> None:
        try:
            self.status.write(self.home, {
                "worker_id": self.worker_id, "version": self.version, **this_process(),
                "server_url": redact_url(self.settings.server_url), "state": self.state,
                "slots": self.pool.describe(time.monotonic()),
                "outbox_results": len(self.outbox), "outbox_bytes": self.outbox.size(),
                "delivery": self.submitter.describe(),
                "claiming": self.not_claiming is None, "not_claiming_because": self.not_claiming,
                "cannot_run_tasks": self.cannot_run(),
                "pause": self.guest.state(time.monotonic()), "cpu_cap": self.cpucap.describe(),
            })
        except OSError as exc:
            log.debug("cannot write status file: %s", exc)

    def shutdown(self) -> None:
        self.stop_event.set()
        self.state = "stopping"
        self._run_turn_hooks(stopping=True)
        self.updates.on_stop(time.monotonic())
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
        self.state = "stopped"
        self.not_claiming = "stopped"
        if self.watchdog is not None:
            self.watchdog.stop()
        self.stopped.set()
        self.write_status()
        left = len(self.outbox)
        log.info("stopped; %d result(s) wait in the outbox for the next start%s", left,
                 f" ({persisted} persisted at shutdown)" if persisted else "")
        self.health.uninstall()
        sys.stdout.flush()
