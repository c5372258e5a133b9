"""Files that a power cut leaves old or new, never half (and Windows' refusal to replace a
file someone has open, retried)."""

from __future__ import annotations

import os
import time
from pathlib import Path


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
