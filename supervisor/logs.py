"""Logging: console plus a size-rotated logs/worker.log in the home (production has no console)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup(home: Path, level: str, max_mb: float, backups: int, console_level: str | None = None) -> Path:
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "worker.log"
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    formatter = logging.Formatter(FORMAT)
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=int(max_mb * 1024 * 1024), backupCount=backups, encoding="utf-8", delay=True)
    file_handler.setFormatter(formatter)
    file_handler.setLevel(level)
    root.addHandler(file_handler)
    if sys.stderr is not None:  # a windowed frozen build has no console at all
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        console.setLevel(console_level or level)
        root.addHandler(console)
    root.setLevel(min(logging.getLevelName(level), logging.getLevelName(console_level or level)))
    # requests/urllib3 chatter would drown the decisions we log ourselves.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    return path
