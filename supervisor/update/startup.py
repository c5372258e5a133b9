"""A worker's start while an update is under way or just ended: repair, then report.

on_start() runs first thing (frozen builds): it puts a runnable binary back if a power cut
interrupted the swap, removes what 1.0.x left and tells the updater script this worker is up.
on_healthy() runs after the first good contact with the server: it decides the update (healthy,
or rolled back) and returns the result of the update task to post.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from common.vocabulary import FailureKind, failure_json
from supervisor.host.home import is_frozen
from supervisor.settings import Settings
from supervisor.store.atomic import atomic_write
from supervisor.update import probation
from supervisor.update.errors import UpdateRefused
from supervisor.update.extract import BINARY
from supervisor.update.records import (
    DECIDED,
    INSTALLED,
    OUTCOME,
    STARTED,
    backup_of,
    clear_pending,
    read_outcome,
    read_pending,
    remember_bad,
    remember_installed,
    update_dir,
    updater_alive,
    write_private,
)
from supervisor.update.scripts import for_this_platform
from supervisor.update.updater import NO_KEY, same_file, supervisor_pids
from supervisor.update.verify import parse_keys

log = logging.getLogger("hive.update")

LEGACY_LEFTOVERS = ("worker_update.exe",)  # what 1.0.x leaves beside worker.exe, by exact name


# ---- start-up repair ------------------------------------------------------------------------------

def on_start(home: Path) -> None:
    """Before anything else, frozen only: make sure a runnable worker.exe is in place."""
    try:
        _on_start(Path(home), Path(os.path.abspath(sys.executable)), frozen=is_frozen())
    except Exception:  # noqa: BLE001 - update bookkeeping must never stop a worker from starting
        log.exception("update: start-up repair failed")


def _on_start(home: Path, exe: Path, frozen: bool = True) -> None:
    upd = update_dir(home)
    pending = read_pending(upd)
    if frozen:
        target = Path(pending["exe"]) if pending and isinstance(pending.get("exe"), str) else exe
        if not target.exists():
            candidates = [backup_of(target)]
            if pending and isinstance(pending.get("staged"), str):
                candidates.append(Path(pending["staged"]))
            for candidate in candidates:
                if candidate.is_file() and not candidate.is_symlink():
                    os.replace(candidate, target)
                    log.warning("update: %s was missing (an update was cut short): restored from %s",
                                target, candidate)
                    break
    clean_legacy(exe)
    if frozen:
        if exe.name.lower() == BINARY:  # a worker install, not an interpreter's folder
            _write_script_beside(exe.parent)
        if pending is not None:
            pids = supervisor_pids()
            top = pids[-1]  # the bootloader when there is one: killing it ends the tree
            try:
                write_private(upd / STARTED, f"{top} {pids[0]}".encode("ascii"))
            except OSError as exc:
                log.warning("update: cannot write %s: %s", upd / STARTED, exc)


def clean_legacy(exe: Path) -> list[Path]:
    """Remove what a 1.0.x update left beside the exe, by exact file name; never the running exe,
    never sys.executable, never through a link."""
    removed = []
    for name in LEGACY_LEFTOVERS:
        leftover = exe.parent / name
        try:
            if leftover.is_symlink() or not leftover.is_file():
                continue
            if same_file(leftover, exe) or same_file(leftover, Path(sys.executable)):
                continue
            leftover.unlink()
            removed.append(leftover)
            log.info("update: removed %s, left over by a 1.0.x update", leftover)
        except OSError as exc:
            log.warning("update: cannot remove %s: %s", leftover, exc)
    return removed


def _write_script_beside(folder: Path) -> None:
    """The current updater script beside the exe (a 1.0.x install has the old updater.bat there)."""
    try:
        name, text = for_this_platform()
    except UpdateRefused as exc:  # a build without its scripts: it refuses updates, and says so here
        log.warning("update: %s", exc)
        return
    path = folder / name
    try:
        if path.is_file() and path.read_bytes() == text:
            return
        atomic_write(path, text)
        log.info("update: wrote %s (the updater of this version)", path)
    except OSError as exc:
        log.warning("update: cannot write %s: %s", path, exc)

# ---- the outcome, once healthy ------------------------------------------------------------------

def on_healthy(home: Path, version: str, worker_id: str, probation_seconds: float = 0.0) \
        -> list[tuple[Any, bool, bytes, float]]:
    """Once healthy (health.py: the executors came up, a probe made the round trip, the server
    answered): results about a finished update to post, as (task_id, ok, raw_result_json,
    pause_seconds). A new version decided healthy starts its probation (probation.py)."""
    try:
        return _on_healthy(Path(home), version, probation_seconds)
    except Exception:  # noqa: BLE001 - never let the report of an update break a running worker
        log.exception("update: cannot report the outcome of an update")
        return []


def _on_healthy(home: Path, version: str, probation_seconds: float = 0.0) -> list[tuple[Any, bool, bytes, float]]:
    upd = update_dir(home)
    pending = read_pending(upd)
    if pending is None:
        return []
    task_id, old, new = pending.get("task_id"), pending.get("from"), pending.get("to")
    pause = float(pending.get("error_sleep") or 0.0)
    if version == new:
        try:
            (upd / DECIDED).mkdir(parents=True)
        except FileExistsError:
            log.warning("update: the updater has already decided to roll back this version")
            return []
        try:
            atomic_write(upd / DECIDED / "healthy", f"{os.getpid()} {version} {time.time():.0f}".encode(),
                         fsync=False)
        except OSError:
            pass  # only a note for people: the directory is the decision
        sequence = pending.get("sequence")
        if isinstance(sequence, int) and not isinstance(sequence, bool):
            try:
                remember_installed(upd, sequence, version)
            except OSError as exc:
                log.warning("update: cannot record release sequence %d in %s: %s", sequence, upd / INSTALLED, exc)
        clear_pending(upd)
        log.info("update: version %s is healthy: reporting success of update task %r", version, task_id)
        probation.begin(upd, version, old, task_id, probation_seconds, pause)
        return [(task_id, True, orjson.dumps({"message": f"updated from {old} to {new}", "version": new,
                                              "from_version": old}), 0.0)]
    outcome = read_outcome(upd)
    if outcome is None and updater_alive(pending):
        log.info("update: the updater is still at work; the outcome is reported at a later start")
        return []
    if version == old:
        if outcome is None:
            reason = "the updater stopped before it finished (killed or power lost); the old version kept running"
        else:
            reason = outcome
        if outcome is not None and outcome.startswith("rolled back") and new:
            remember_bad(upd, new, outcome)
        text = f"update from {old} to {new} failed: {reason}"
    else:
        text = f"update from {old} to {new} did not end as planned: version {version} is running"
    clear_pending(upd)
    (upd / OUTCOME).unlink(missing_ok=True)
    log.warning("update: %s; reporting task %r as update_failed", text, task_id)
    return [(task_id, False, failure_json(text, FailureKind.UPDATE_FAILED), pause)]

def check_settings(settings: Settings) -> None:
    """At start, one line: self-update is off (no key), or unsigned releases are accepted (labs)."""
    try:
        keys = parse_keys(settings.update_root_keys)
    except UpdateRefused as exc:
        log.error("update: %s: every update will be refused", exc)
        return
    if settings.update_allow_unsigned:
        log.warning("UPDATE_ALLOW_UNSIGNED is on: update_worker installs releases WITHOUT a signed statement "
                    "(sha256/size checks only, no downgrade protection); for labs only, never on the fleet "
                    "(docs/self-update.md)")
    elif not keys:
        log.warning("%s (UPDATE_ROOT_KEYS is empty): every update_worker task is refused (docs/self-update.md)",
                    NO_KEY)
