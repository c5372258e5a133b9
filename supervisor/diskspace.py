"""Free space in the home: below DISK_FREE_MIN_MB the worker claims nothing.

A task claimed when its journal record cannot be written is not run (claimer.py), and
the server only gets it back through its own requeue; so stop asking before that.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("hive.disk")

DISK_FREE_MIN_MB = 64
CHECK_EVERY = 10.0  # seconds; free space does not vanish faster than a few tasks write
MB = 1024 * 1024


class DiskWatch:
    def __init__(self, home: Path, min_free_mb: float = DISK_FREE_MIN_MB) -> None:
        self.home = home
        self.min_free = min_free_mb * MB
        self.next_check = 0.0
        self.free: int | None = None
        self.was_full = False

    def full(self, now: float) -> str | None:
        """Why the disk is too full to claim, or None."""
        if now >= self.next_check:
            self.next_check = now + CHECK_EVERY
            try:
                self.free = shutil.disk_usage(self.home).free
            except OSError:
                self.free = None  # unknown: the journal's own errors still say it
        full = self.free is not None and self.free < self.min_free
        if full != self.was_full:
            self.was_full = full
            if full:
                log.error("only %.0f MB free in %s (under %.0f MB): not claiming until there is space",
                          (self.free or 0) / MB, self.home, self.min_free / MB)
            else:
                log.info("disk space in %s is back: claiming resumes", self.home)
        if full:
            return f"disk full ({(self.free or 0) / MB:.0f} MB free in {self.home}, under {self.min_free / MB:.0f} MB)"
        return None
