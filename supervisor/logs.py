"""Logging: console plus a size-rotated logs/worker.log in the home (production has no console)."""

from __future__ import annotations

import logging
import logging.handlers
import numbers
import sys
from pathlib import Path
from typing import Any

from supervisor.safetext import loggable, loggable_block

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# One argument of a log line (a task id, a task's printed line) is cut here: a server that sends a
# 10 MB task id must not write 10 MB per log line about that task.
ARG_MAX_CHARS = 10000


TASK_LINE = "hive_task_line"  # set on a record forwarded from a task (pool.py)


def _dev_console(record: logging.LogRecord) -> bool:
    """--dev's console: a task's own lines at every level, the supervisor's from INFO up (its DEBUG
    lines, "no tasks; next poll" every 2 s, would bury the author's)."""
    return record.levelno >= logging.INFO or bool(getattr(record, TASK_LINE, False))


class Block(str):
    """A log argument already made safe by loggable_block (a traceback): kept on its lines."""


class _Shown:
    """A log argument printed through loggable(), whichever of %s and %r the message uses."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return loggable(str(self.value), ARG_MAX_CHARS)

    def __repr__(self) -> str:
        return loggable(repr(self.value), ARG_MAX_CHARS)


def _shown(value: Any) -> Any:
    if type(value) is str and len(value) <= ARG_MAX_CHARS and value.isprintable():
        return value  # the usual case, as is: %s and %r of it are both safe already
    if isinstance(value, (int, float, Block, numbers.Number)):  # numbers keep %d / %.1f working
        return value
    return _Shown(value)


class SafeFormatter(logging.Formatter):
    """Every argument of every record goes through loggable(), so text from the server or a task
    can never start a line of its own in worker.log or send escapes to a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        safe = getattr(record, "hive_safe_message", None)  # made once, for the file and the console
        if safe is None:
            args = record.args
            if isinstance(args, tuple):
                safe = record.msg % tuple(map(_shown, args)) if args else loggable_block(str(record.msg))
            elif isinstance(args, dict):
                safe = record.msg % {k: _shown(v) for k, v in args.items()}
            else:
                safe = loggable_block(str(record.msg))
            record.hive_safe_message = safe
        args, msg = record.args, record.msg
        record.args, record.msg = None, safe
        try:
            return super().format(record)
        finally:
            record.args, record.msg = args, msg

    def formatException(self, ei: Any) -> str:  # noqa: N802 - name fixed by logging.Formatter
        return "    " + loggable_block(super().formatException(ei))  # below the record's line, indented

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - name fixed by logging.Formatter
        return "    " + loggable_block(stack_info)


def setup(home: Path, level: str, max_mb: float, backups: int, console_level: str | None = None,
          dev: bool = False) -> Path:
    """Log to logs/worker.log at ``level`` and to the console at ``console_level`` (default: ``level``);
    ``dev``: the console shows tasks' DEBUG lines but only the supervisor's INFO and up."""
    if dev:
        console_level = "DEBUG"
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "worker.log"
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    formatter = SafeFormatter(FORMAT)
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=int(max_mb * 1024 * 1024), backupCount=backups, encoding="utf-8", delay=True)
    file_handler.setFormatter(formatter)
    file_handler.setLevel(level)
    root.addHandler(file_handler)
    if sys.stderr is not None:  # a windowed frozen build has no console at all
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        console.setLevel(console_level or level)
        if dev:
            console.addFilter(_dev_console)
        root.addHandler(console)
    root.setLevel(min(logging.getLevelName(level), logging.getLevelName(console_level or level)))
    # requests/urllib3 chatter would drown the decisions we log ourselves.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    return path
