"""The watchdog (issue 24.3): a worker that is alive but stuck exits, so it is started again.

Task Scheduler's "do not start a new instance" keeps a wedged worker running forever: alive, holding
its home's lock, doing nothing. So each loop that must keep turning (the supervision loop, the claim
and submit loops) calls ``beat(name)`` once per turn, and a watchdog thread checks that each one beat
within a bound derived from that loop's own deadlines (``bounds``) plus WATCHDOG_GRACE. When one did
not, the watchdog writes one line and every thread's stack (faulthandler) to logs/worker.log and
exits with EXIT_WEDGED: systemd (Restart=always), Task Scheduler (restart on failure, and the
5-minute repetition) and 1.0.x's watcher start the worker again. Nothing claimed is lost: every
claim and result is in the journal, and the next start reports it (store/recovery.py).

A beat is one monotonic clock read and one dict store (the GIL makes it atomic): no lock, no cost
worth measuring. WATCHDOG_GRACE = 0 turns the watchdog off.

Tests only: HIVE_INTERNAL_TEST_WEDGE names a file; once that file holds a loop's name, that loop
blocks forever at its next beat (tests/test_watchdog.py). Without the variable the hook costs one
``is None`` check per beat.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from supervisor.settings import Settings

log = logging.getLogger("hive.watchdog")


class Alive(Protocol):
    """What the watchdog asks of a loop's thread (threading.Thread has it)."""

    def is_alive(self) -> bool: ...

EXIT_WEDGED = 4  # documented in README.md and docs/settings.md; never used for anything else
WEDGE_ENV = "HIVE_INTERNAL_TEST_WEDGE"
SUPERVISION, CLAIM, SUBMIT = "supervision", "claim", "submit"
SUSPEND_SLACK = 5.0  # seconds a watchdog wait may overrun before the process counts as suspended
NO_TASK_JITTER = 0.1  # net/backoff.jittered's spread: the claim loop's pause after "no_tasks"

_beats: dict[str, float] = {}
_wedge_file = os.environ.get(WEDGE_ENV) or None


def beat(name: str) -> None:
    """One turn of loop ``name`` made progress (called by the loop itself, once per turn)."""
    _beats[name] = time.monotonic()
    if _wedge_file is not None:
        _test_wedge(name, _wedge_file)


def _test_wedge(name: str, wedge_file: str) -> None:
    try:
        wanted = Path(wedge_file).read_text(encoding="ascii").strip()
    except OSError:
        return
    if wanted == name:
        log.warning("test hook %s: wedging the %s loop", WEDGE_ENV, name)
        threading.Event().wait()  # forever: what a deadlock or a hung call looks like from outside


def bounds(settings: Settings, idle_tick: float) -> dict[str, float]:
    """Seconds each loop may go without a beat: the longest a healthy turn can take (its own
    waits and HTTP deadlines) plus WATCHDOG_GRACE (slow disks, spawning executors, a busy PC)."""
    grace = settings.watchdog_grace
    return {
        # a turn waits at most IDLE_TICK for frames, then does its own (bounded) work
        SUPERVISION: idle_tick + grace,
        # one get_task (GET_TASK_TIMEOUT, the whole exchange), then at most the jittered NO_TASK_SLEEP
        CLAIM: settings.get_task_timeout + settings.no_task_sleep * (1 + NO_TASK_JITTER) + grace,
        # one submit_result (SUBMIT_TIMEOUT), then at most a backoff delay (TIME_ERROR_SLEEP, at least 1 s)
        SUBMIT: settings.submit_timeout + max(settings.time_error_sleep, 1.0) + grace,
    }


def overdue(last_beats: dict[str, float], limits: dict[str, float], alive: dict[str, bool],
            now: float, floor: float = 0.0) -> tuple[str, float] | None:
    """(loop, seconds since its last beat) of the first live loop past its bound, else None.
    ``floor``: no loop is counted quiet from before it (the process was suspended until then)."""
    for name, limit in limits.items():
        if not alive.get(name, False) or name not in last_beats:
            continue
        quiet = now - max(last_beats[name], floor)
        if quiet > limit:
            return name, quiet
    return None


class Watchdog(threading.Thread):
    """Checks every loop's last beat a few times per shortest bound; exits the process on a wedge.
    A loop whose thread has ended (the worker is stopping) is not wedged."""

    def __init__(self, settings: Settings, idle_tick: float, threads: Mapping[str, Alive]) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.limits = {name: limit for name, limit in bounds(settings, idle_tick).items() if name in threads}
        self.threads = threads
        self.log_path = Path(settings.home) / "logs" / "worker.log"
        self.halt = threading.Event()
        self.every = max(0.2, min(self.limits.values(), default=60.0) / 4)
        now = time.monotonic()
        for name in self.limits:  # counted from the watchdog's start (not from an earlier worker in this process)
            _beats[name] = now

    def run(self) -> None:
        last = floor = time.monotonic()
        while not self.halt.wait(self.every):
            now = time.monotonic()
            if now - last > 2 * self.every + SUSPEND_SLACK:
                # This thread slept far longer than it asked: the PC slept (Windows' monotonic clock
                # goes on) or the process was stopped. Every loop gets its whole bound from now.
                floor = now
                log.info("watchdog: %.0f s passed in a %.1f s wait (suspended?): every loop's bound starts again",
                         now - last, self.every)
            last = now
            alive = {name: thread.is_alive() for name, thread in self.threads.items()}
            late = overdue(dict(_beats), self.limits, alive, now, floor)
            if late is not None and not self.halt.is_set():
                self.trip(*late)

    def stop(self) -> None:
        self.halt.set()

    def trip(self, name: str, quiet: float) -> None:
        """Say why, write every thread's stack, exit with EXIT_WEDGED. Written straight to the file,
        not through logging: a wedged thread may hold a logging handler's lock."""
        line = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} CRITICAL hive.watchdog: the {name} loop made no progress "
                f"for {quiet:.0f} s (its bound: {self.limits[name]:.0f} s, WATCHDOG_GRACE included): writing every "
                f"thread's stack and exiting with status {EXIT_WEDGED} so that the worker is started again; "
                "claimed tasks are reported at the next start\n")
        for target in (self.log_path, None):
            try:
                if target is None:
                    if sys.stderr is None:
                        continue
                    out = sys.stderr
                    out.write(line)
                    out.flush()
                    faulthandler.dump_traceback(out, all_threads=True)
                    continue
                with open(target, "a", encoding="utf-8") as out:
                    out.write(line)
                    out.flush()
                    faulthandler.dump_traceback(out, all_threads=True)
            except (OSError, ValueError, AttributeError):
                continue  # no log file, no console: the exit status still says it
        os._exit(EXIT_WEDGED)


def start(settings: Settings, idle_tick: float, threads: Mapping[str, Alive]) -> Watchdog | None:
    """The watchdog over these loops, started; None when WATCHDOG_GRACE is 0 (off)."""
    if settings.watchdog_grace <= 0:
        log.info("watchdog off (WATCHDOG_GRACE = 0): a stuck worker is not restarted")
        return None
    dog = Watchdog(settings, idle_tick, threads)
    dog.start()
    log.debug("watchdog: bounds %s", ", ".join(f"{n} {s:.0f} s" for n, s in dog.limits.items()))
    return dog
