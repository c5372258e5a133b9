"""What a task can ask the worker for. The whole public surface for task authors.

    from executor import api

    def my_task(url: str) -> dict:
        log = api.get_logger()              # or print(): both end up in logs/worker.log
        profile = api.data_dir() / "chrome-profile"   # kept across tasks of this type
        work = api.scratch_dir()            # empty at the start of each task, emptied after (it is also the cwd)
        if bad:
            raise api.TaskFailure("site answered 403")  # clean failure, kind task_failed
        return {"status": "success", "data": {...}}

Outside a worker (a plain pytest of the function) the folders fall back to
temporary ones, so tasks stay testable as ordinary functions.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.protocol import Run

__all__ = ["TaskFailure", "current_task", "data_dir", "get_logger", "scratch_dir", "settings"]


class TaskFailure(Exception):
    """Raise from a task to fail cleanly: the server gets this message, kind task_failed."""


# Set by executor/process.py around each task; None outside a worker.
_current: Run | None = None
_settings: dict[str, Any] = {}
_fallback_root: Path | None = None


def _fallback(name: str) -> Path:
    global _fallback_root
    if _fallback_root is None:
        _fallback_root = Path(tempfile.mkdtemp(prefix="hive-task-"))
    path = _fallback_root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def current_task() -> dict[str, Any]:
    """{"id": ..., "task_type": ...} of the running task ({} outside a worker)."""
    if _current is None:
        return {}
    return {"id": _current.id, "task_type": _current.task_type}


def scratch_dir() -> Path:
    """An empty folder for this task (also its working directory), emptied after it; one per executor."""
    if _current is None:
        return _fallback("scratch")
    return Path(_current.scratch)


def data_dir() -> Path:
    """A persistent folder for this task type in the worker's home, e.g. a browser profile."""
    if _current is None:
        return _fallback("data")
    path = Path(_current.data)
    path.mkdir(parents=True, exist_ok=True)
    return path


def get_logger() -> logging.Logger:
    """A logger whose lines reach the worker's log, tagged with the task id."""
    task_type = _current.task_type if _current else "local"
    return logging.getLogger(f"task.{task_type}")


def settings() -> dict[str, Any]:
    """The worker's effective settings (read-only copy), e.g. settings()["pool_size"]."""
    return dict(_settings)
