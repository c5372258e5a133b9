"""What an update keeps on disk between its steps and across restarts, and the paths of it all.

Files, all by exact name (never derived by string replacement of the running executable):
  <install>/worker.exe(.old)            the live binary and the previous one (hard link or renamed)
  <install>/updater.bat|updater.sh      the script, for the record and for a 1.0.x caller
  <home>/update/release.zip(.part)      the download (removed once unpacked)
  <home>/update/staged/worker.exe       the verified, self-tested new binary
  <home>/update/preflight/              where the staged binary runs its self-test
  <home>/update/run/updater.bat|.sh     the copy of the script that runs (never rewritten while it runs)
  <home>/update/pending.json            the update in progress: task id, from/to version, paths
  <home>/update/started.pid             written by a worker starting while an update is pending
  <home>/update/decided/                made (atomically) by the healthy new worker or by a rollback
  <home>/update/outcome.txt             written by the script when it did not end healthy
  <home>/update/bad-versions.json       versions rolled back on this PC: refused at once
  <home>/update/installed.json          the highest release sequence ever installed here (no downgrade)
  <home>/logs/updater.log               every step of the script
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import orjson
import psutil

from supervisor.store.atomic import atomic_write
from supervisor.update.errors import UpdateRefused

log = logging.getLogger("hive.update")

UPDATE_DIR = "update"
PENDING = "pending.json"
STARTED = "started.pid"
DECIDED = "decided"
OUTCOME = "outcome.txt"
BAD_VERSIONS = "bad-versions.json"
INSTALLED = "installed.json"
BAD_VERSION_HOLD = 7 * 86400.0  # a rolled-back version is refused at once for this long


def update_dir(home: Path) -> Path:
    return Path(home) / UPDATE_DIR


def backup_of(exe: Path) -> Path:
    """worker.exe -> worker.exe.old: a suffix appended, never a replacement inside the name."""
    return exe.with_name(exe.name + ".old")


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) and keep it to this account (POSIX 0700 whatever the
    umask), so that no other local account can swap a file in it between a check and its use.
    Windows: install.bat gives the install folder (the home) an ACL of this account, SYSTEM and
    Administrators only, and what is made inside inherits it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.name != "nt":
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes, fsync: bool = True) -> None:
    atomic_write(path, data, fsync=fsync)
    if os.name != "nt":
        os.chmod(path, 0o600)


def read_pending(upd: Path) -> dict | None:
    try:
        data = orjson.loads((upd / PENDING).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("update: unreadable %s (%s): ignored", upd / PENDING, exc)
        return None
    return data if isinstance(data, dict) else None


def write_pending(upd: Path, data: dict) -> None:
    write_private(private_dir(upd) / PENDING, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def clear_pending(upd: Path) -> None:
    (upd / PENDING).unlink(missing_ok=True)


def updater_alive(pending: dict) -> bool:
    pid = pending.get("updater_pid")
    if not isinstance(pid, int):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        ctime = pending.get("updater_ctime")
        return ctime is None or abs(proc.create_time() - float(ctime)) < 1.0
    except psutil.Error:
        return False


def bad_versions(upd: Path) -> dict[str, dict]:
    try:
        data = orjson.loads((upd / BAD_VERSIONS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def remember_bad(upd: Path, version: str, reason: str) -> None:
    data = bad_versions(upd)
    data[version] = {"reason": reason, "at": time.time()}
    write_private(private_dir(upd) / BAD_VERSIONS, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def highest_installed(upd: Path) -> int:
    """The highest release sequence ever installed in this home (0: none recorded)."""
    try:
        data = orjson.loads((upd / INSTALLED).read_bytes())
    except FileNotFoundError:
        return 0
    except (OSError, orjson.JSONDecodeError) as exc:
        # Unreadable is not "nothing installed": that would reopen every older release.
        raise UpdateRefused(f"cannot read {upd / INSTALLED} ({' '.join(str(exc).split())[:120]}); fix or delete it") \
            from None
    value = data.get("sequence") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def remember_installed(upd: Path, sequence: int, version: str) -> None:
    try:
        if sequence <= highest_installed(upd):
            return
    except UpdateRefused:
        pass  # an unreadable record is replaced by the release that now runs
    write_private(private_dir(upd) / INSTALLED,
                  orjson.dumps({"sequence": sequence, "version": version, "at": time.time()}))


def refuse_if_bad(upd: Path, version: str) -> None:
    entry = bad_versions(upd).get(version)
    if not isinstance(entry, dict):
        return
    at = float(entry.get("at", 0))
    if time.time() - at < BAD_VERSION_HOLD:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
        raise UpdateRefused(f"version {version} was rolled back on this PC at {when} ({entry.get('reason')}); refused "
                      f"for {BAD_VERSION_HOLD / 86400:g} days (or delete {upd / BAD_VERSIONS})")


def read_outcome(upd: Path) -> str | None:
    try:
        text = (upd / OUTCOME).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text or None
