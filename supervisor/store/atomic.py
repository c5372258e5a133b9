"""Files that a power cut leaves old or new, never half (and Windows' refusal to replace a
file someone has open, retried); a store folder someone deleted is made again at the next write."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("hive.store")
Opened = TypeVar("Opened")


def recreate_folder(folder: Path) -> bool:
    """Make ``folder`` again if it is gone (a person tidied away an "empty" outbox/ or journal/
    while the worker ran), with one WARNING; False if it exists, so the error was another one.
    Raises OSError if it cannot be made: that error is the one to report."""
    if folder.is_dir():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    log.warning("%s was missing (deleted while the worker ran?): created again", folder)
    return True


def open_healing(path: Path, opener: Callable[[Path], Opened]) -> Opened:
    """``opener(path)``, once more after making ``path``'s folder again if it was missing."""
    try:
        return opener(path)
    except FileNotFoundError:
        if not recreate_folder(path.parent):
            raise
        return opener(path)


def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write via temp file + flush + fsync + rename, so a power cut leaves old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open_healing(tmp, lambda p: open(p, "wb")) as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def replace(src: Path, dst: Path, attempts: int = 8) -> None:
    """os.replace, retried briefly on Windows: there a reader that has ``dst`` open for a moment
    (``--status``, an antivirus scan of a file just written) makes the replace fail. A missing
    folder of ``dst`` is made again (recreate_folder)."""
    for attempt in range(attempts):
        try:
            os.replace(src, dst)
            return
        except FileNotFoundError:
            if not src.exists() or not recreate_folder(dst.parent):  # (moved aside into a deleted folder)
                raise
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
