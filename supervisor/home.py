"""The worker's home folder and small durable-file helpers used by everything in it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import BinaryIO

# main.py sits at the repo root; this file is one level below it.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def default_home() -> Path:
    """Beside the executable when frozen, beside main.py from source."""
    if is_frozen():
        return Path(sys.executable).resolve().parent
    return SOURCE_ROOT


def resolve_home(flag: str | None, environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    raw = flag or environ.get("HIVE_HOME") or None
    home = Path(raw).expanduser().resolve() if raw else default_home()
    home.mkdir(parents=True, exist_ok=True)
    return home


def lock_home(home: Path) -> BinaryIO | None:
    """Take home/worker.lock for the life of this process; None if another worker holds it.

    The OS releases it when the process ends, however it ends (a crash, a kill, a power cut),
    so a stale lock file never blocks a start. Executors do not inherit it.
    """
    f = open(home / "worker.lock", "a+b")  # held open on purpose: closing it releases the lock
    try:
        if os.name == "nt":
            import msvcrt

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write via temp file + flush + fsync + rename, so a power cut leaves old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def replace(src: Path, dst: Path, attempts: int = 8) -> None:
    """os.replace, retried briefly on Windows: there a reader that has ``dst`` open for a moment
    (``--status``, an antivirus scan of a file just written) makes the replace fail."""
    for attempt in range(attempts):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if os.name != "nt" or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))  # 0.72 s in all


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (POSIX; Windows has no directory handles to sync)."""
    if os.name == "posix":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
