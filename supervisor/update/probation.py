"""Probation (issue 24.1): a self-updated version that was healthy once must also keep coming up.

When the new version decides its update healthy (startup.on_healthy) it starts a probation of
UPDATE_PROBATION seconds of its own running time (summed over its runs, so neither the PC's clock
nor the time the PC is off count) in <home>/update/probation.json. Every run of that version marks
the record "open" at start and closes it on a clean stop; a run that finds it still open knows the
run before it crashed (a crash, a kill, a watchdog exit, a power cut), and a run that does not come
up (health.py) within UPDATE_HEALTH_TIMEOUT stops itself and leaves it open. After
PROBATION_FAILURES such runs the next start rolls back by itself: worker.exe.old (kept by the
updater) goes back onto worker.exe, and this process exits with EXIT_ROLLED_BACK; the service
manager starts the old binary, which reports why (outcome.txt and pending.json, as after the
updater's own rollback) and refuses that version for BAD_VERSION_HOLD.

On the normal path it costs one missing-file check per start; during a probation, one small
write per PROBATION_SAVE_EVERY seconds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

from supervisor.update.records import (
    OUTCOME,
    backup_of,
    private_dir,
    update_dir,
    write_pending,
    write_private,
)

log = logging.getLogger("hive.update")

PROBATION = "probation.json"
PROBATION_FAILURES = 3  # runs that crashed or did not come up, within the probation, that roll back
PROBATION_SAVE_EVERY = 30.0  # seconds of running time between two notes of it (lost to a crash: at most this)
EXIT_ROLLED_BACK = 5  # documented in docs/self-update.md: start me again, the previous binary is back


def read(upd: Path) -> dict | None:
    try:
        data = orjson.loads((upd / PROBATION).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("update: unreadable %s (%s): no probation", upd / PROBATION, exc)
        return None
    return data if isinstance(data, dict) else None


def write(upd: Path, record: dict) -> None:
    write_private(private_dir(upd) / PROBATION, orjson.dumps(record), fsync=False)


def begin(upd: Path, version: str, old: Any, task_id: Any, seconds: float, error_sleep: float) -> None:
    """The new version was just decided healthy: its probation starts, this run open."""
    if seconds <= 0:
        (upd / PROBATION).unlink(missing_ok=True)
        return
    try:
        write(upd, {"version": version, "from": old, "task_id": task_id, "seconds": seconds, "uptime": 0.0,
                    "failures": 0, "open": True, "error_sleep": error_sleep})
    except OSError as exc:  # the update itself succeeded: say it, serve on without a probation
        log.warning("update: cannot start the probation of version %s (%s): none", version, exc)
        return
    log.info("update: version %s is on probation for %.0f s of running time: %d crashes or starts that do not come "
             "up roll it back", version, seconds, PROBATION_FAILURES)


def verdict(record: dict | None, version: str, failures_allowed: int = PROBATION_FAILURES) -> tuple[str, dict | None]:
    """At start: ("none", None) no probation for this version; ("on probation", record) with the
    previous run counted; ("roll back", record) when failures reached ``failures_allowed``."""
    if record is None or record.get("version") != version:
        return "none", None
    record = dict(record)
    if record.get("open"):
        record["failures"] = int(record.get("failures") or 0) + 1
    if record["failures"] >= failures_allowed:
        return "roll back", record
    record["open"] = True
    return "on probation", record


def failed_copy(exe: Path) -> Path:
    """Where Windows' rollback moves the running, failed binary: worker.exe -> worker.exe.failed."""
    return exe.with_name(exe.name + ".failed")


def remove_failed_copy(exe: Path) -> None:
    """The failed binary a Windows rollback left, by exact name; never the running one, never a link."""
    failed = failed_copy(exe)
    try:
        if failed.is_symlink() or not failed.is_file() or os.path.samefile(failed, exe):
            return
        failed.unlink()
        log.info("update: removed %s, the binary a probation rolled back", failed)
    except OSError as exc:
        log.warning("update: cannot remove %s: %s", failed, exc)


def roll_back(upd: Path, exe: Path, record: dict) -> bool:
    """Put the previous binary back onto ``exe`` and leave the old version what it reports. False
    when there is nothing to put back."""
    old = backup_of(exe)
    reason = (f"rolled back: version {record.get('version')} crashed or did not come up {record.get('failures')} "
              f"times within its probation of {float(record.get('seconds') or 0):.0f} s")
    if not old.is_file() or old.is_symlink():
        log.error("update: %s, but %s is missing: nothing to roll back to; version %s keeps running",
                  reason.removeprefix("rolled back: "), old, record.get("version"))
        (upd / PROBATION).unlink(missing_ok=True)
        return False
    if os.name == "nt":  # a running image can be renamed, never replaced; the next start deletes it
        os.replace(exe, failed_copy(exe))
    os.replace(old, exe)
    write_pending(upd, {"task_id": record.get("task_id"), "from": record.get("from"), "to": record.get("version"),
                        "exe": str(exe), "error_sleep": float(record.get("error_sleep") or 0.0)})
    write_private(upd / OUTCOME, (reason + "\n").encode("utf-8"))
    (upd / PROBATION).unlink(missing_ok=True)
    log.error("update: %s: the previous binary is back at %s; exiting (status %d) so that it is started",
              reason, exe, EXIT_ROLLED_BACK)
    return True


class Probation:
    """One run's part in its version's probation (the coordinator calls it from the loop's thread)."""

    def __init__(self, home: Path, version: str, health_timeout: float) -> None:
        self.upd = update_dir(home)
        self.version = version
        self.health_timeout = health_timeout
        self.record: dict | None = None  # while this run is on probation
        self.started = 0.0
        self.saved = 0.0  # monotonic time up to which the uptime is in the record
        self.failed = False  # this run did not come up: it stops and stays counted

    def on_start(self, exe: Path, now: float) -> int | None:
        """Frozen builds, first thing: count the previous run; EXIT_ROLLED_BACK when rolled back."""
        remove_failed_copy(exe)
        what, record = verdict(read(self.upd), self.version)
        if what == "none":
            if (self.upd / PROBATION).exists():
                (self.upd / PROBATION).unlink(missing_ok=True)  # another version's: moot
            return None
        assert record is not None
        if what == "roll back":
            return EXIT_ROLLED_BACK if roll_back(self.upd, exe, record) else None
        log.log(logging.WARNING if record["failures"] else logging.INFO,
                "update: version %s on probation: %d of %d failed runs so far, %.0f of %.0f s run", self.version,
                record["failures"], PROBATION_FAILURES, record.get("uptime", 0.0), record.get("seconds", 0.0))
        self.adopt(record, now)
        write(self.upd, record)
        return None

    def adopt(self, record: dict, now: float) -> None:
        """This run is on probation from ``now`` (a start, or the healthy decision of the first run)."""
        self.record, self.started, self.saved = record, now, now

    def tick(self, now: float, came_up: bool) -> str | None:
        """Every loop turn: count running time, end the probation when served; a reason to stop
        this run when it has not come up in time."""
        if self.record is None or self.failed:
            return None
        if not came_up and now - self.started > self.health_timeout:
            self.failed = True
            return (f"version {self.version} on probation did not come up within {self.health_timeout:.0f} s "
                    "(UPDATE_HEALTH_TIMEOUT): stopping; this run counts as failed")
        if now - self.saved >= PROBATION_SAVE_EVERY:
            self._save(now)
        return None

    def _save(self, now: float) -> None:
        assert self.record is not None
        self.record["uptime"] = float(self.record.get("uptime") or 0.0) + (now - self.saved)
        self.saved = now
        if self.record["uptime"] >= float(self.record.get("seconds") or 0.0):
            log.info("update: version %s has served its probation (%.0f s of running time, %d failed run(s))",
                     self.version, self.record["uptime"], self.record.get("failures", 0))
            (self.upd / PROBATION).unlink(missing_ok=True)
            self.record = None
            return
        try:
            write(self.upd, self.record)
        except OSError as exc:
            log.warning("update: cannot note the probation in %s: %s", self.upd / PROBATION, exc)

    def on_stop(self, now: float) -> None:
        """A clean stop: this run is closed (not counted), unless it did not come up."""
        if self.record is None or self.failed:
            return
        self.record["open"] = False
        self._save(now)  # writes the closed record, or ends the probation when it is served
