"""What an update keeps on disk between its steps and across restarts, and the paths of it all.

Files, all by exact name (never derived by string replacement of the running executable):
  <install>/worker.exe(.old)            the live binary and the previous one (hard link or renamed)
  <install>/updater.bat|updater.sh      the script, for the record and for a 1.0.x caller
  <home>/update/release.zip(.part)      the download (removed once unpacked)
  <home>/update/staged/worker.exe       the verified, self-tested new binary
  <home>/update/staged.json             what that binary is (URL hash, zip, statement): a re-sent update
                                        of the same release uses it instead of downloading again
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

import base64
import hashlib
import logging
import os
import time
from pathlib import Path

import orjson
import psutil

from supervisor.host import clock
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
KEPT = "staged.json"
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
    data[version] = {"reason": reason, "at": clock.now()}
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
                  orjson.dumps({"sequence": sequence, "version": version, "at": clock.now()}))


def still_held(at: float, now: float, hold: float = BAD_VERSION_HOLD) -> bool:
    """Whether a version rolled back at ``at`` is still refused at ``now`` (both clock.now() times).
    A time in the future by more than the hold cannot be right (the clock was far ahead when it
    was written): it holds nothing, rather than a version forever."""
    return abs(now - at) < hold


def refuse_if_bad(upd: Path, version: str) -> None:
    entry = bad_versions(upd).get(version)
    if not isinstance(entry, dict):
        return
    at = float(entry.get("at", 0))
    if still_held(at, clock.now()):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
        raise UpdateRefused(f"version {version} was rolled back on this PC at {when} ({entry.get('reason')}); refused "
                      f"for {BAD_VERSION_HOLD / 86400:g} days (or delete {upd / BAD_VERSIONS})")


def read_outcome(upd: Path) -> str | None:
    try:
        text = (upd / OUTCOME).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text or None


# ---- a staged release waiting to be installed (issue 24.4) --------------------------------------------

def url_key(url: str) -> str:
    """What the record keeps of a URL: its hash (a URL may carry a user:password)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def keep_release(upd: Path, url: str, zip_sha256: str, zip_size: int, binary: Path, binary_sha256: str,
                 binary_size: int, statement: bytes | None, signature: bytes | None,
                 trust: bytes | None = None) -> None:
    """Note the verified, self-tested binary staged at ``binary`` and the release it came from."""
    record = {"url_sha256": url_key(url), "zip_sha256": zip_sha256, "zip_size": zip_size, "binary": str(binary),
              "binary_sha256": binary_sha256, "binary_size": binary_size,
              "statement": None if statement is None else base64.b64encode(statement).decode("ascii"),
              "signature": None if signature is None else base64.b64encode(signature).decode("ascii"),
              "trust": None if trust is None else base64.b64encode(trust).decode("ascii")}
    write_private(private_dir(upd) / KEPT, orjson.dumps(record))


def forget_release(upd: Path, binary: Path) -> None:
    """The staged binary and its record go (an earlier attempt's, or one that was refused)."""
    binary.unlink(missing_ok=True)
    (upd / KEPT).unlink(missing_ok=True)


def kept_release(upd: Path, binary: Path, url: str, zip_sha256: str | None, zip_size: int | None,
                 statement: bytes | None) -> tuple[str, int, str, int, bytes | None, bytes | None, bytes | None] | None:
    """The release staged at ``binary`` by an earlier update task, when this task asks for the same
    one (same URL; the zip hash, size and statement when the params give them) and the binary still
    hashes to what was verified: (zip_sha256, zip_size, binary_sha256, binary_size, statement,
    signature, trust), all still to be verified again by the caller. Anything else is forgotten (None)."""
    try:
        record = orjson.loads((upd / KEPT).read_bytes())
        same = (isinstance(record, dict) and record.get("url_sha256") == url_key(url)
                and record.get("binary") == str(binary)
                and zip_sha256 in (None, record.get("zip_sha256")) and zip_size in (None, record.get("zip_size")))
        kept_statement = _unb64(record.get("statement")) if same else None
        if same and statement is not None and statement != kept_statement:
            same = False
        if same:
            with open(binary, "rb") as f:
                same = hashlib.file_digest(f, "sha256").hexdigest() == record.get("binary_sha256") \
                    and os.fstat(f.fileno()).st_size == record.get("binary_size")
    except (OSError, ValueError, TypeError):  # no record, no binary, or either unreadable
        same = False
    if not same:
        forget_release(upd, binary)
        return None
    return (record["zip_sha256"], record["zip_size"], record["binary_sha256"], record["binary_size"],
            kept_statement, _unb64(record.get("signature")), _unb64(record.get("trust")))


def _unb64(text: object) -> bytes | None:
    return None if text is None else base64.b64decode(str(text), validate=True)
