"""Logging: console plus a size-rotated logs/worker.log in the home (production has no console)."""

from __future__ import annotations

import logging
import logging.handlers
import numbers
import sys
from pathlib import Path
from typing import Any

from supervisor.safetext import loggable, loggable_block, redact_url

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# One argument of a log line (a task id, a task's printed line) is cut here: a server that sends a
# 10 MB task id must not write 10 MB per log line about that task.
ARG_MAX_CHARS = 10000


class Block(str):
    """A log argument already made safe by loggable_block (a traceback): kept on its lines."""


class _Shown:
    """A log argument printed through loggable(), whichever of %s and %r the message uses."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    # Credentials are masked before the cut: a URL cut inside its password would escape the mask.
    def __str__(self) -> str:
        return loggable(redact_url(str(self.value)), ARG_MAX_CHARS)

    def __repr__(self) -> str:
        return loggable(redact_url(repr(self.value)), ARG_MAX_CHARS)


def _shown(value: Any) -> Any:
    if type(value) is str and len(value) <= ARG_MAX_CHARS and value.isprintable():
        return value  # the usual case, as is: %s and %r of it are both safe (its URLs are masked with the line)
    if isinstance(value, (int, float, Block, numbers.Number)):  # numbers keep %d / %.1f working
        return value
    return _Shown(value)


class SafeFormatter(logging.Formatter):
    """Every argument of every record goes through loggable(), so text from the server or a task
    can never start a line of its own in worker.log or send escapes to a terminal; every line and
    traceback goes through redact_url(), so no URL's user:password reaches worker.log or the console."""

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
            record.hive_safe_message = safe = redact_url(safe)
        args, msg = record.args, record.msg
        record.args, record.msg = None, safe
        try:
            return super().format(record)
        finally:
            record.args, record.msg = args, msg

    def formatException(self, ei: Any) -> str:  # noqa: N802 - name fixed by logging.Formatter
        return "    " + loggable_block(redact_url(super().formatException(ei)))  # below the record's line, indented

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - name fixed by logging.Formatter
        return "    " + loggable_block(redact_url(stack_info))


def setup(home: Path, level: str, max_mb: float, backups: int, console_level: str | None = None) -> Path:
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
        root.addHandler(console)
    root.setLevel(min(logging.getLevelName(level), logging.getLevelName(console_level or level)))
    # requests/urllib3 chatter would drown the decisions we log ourselves.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    return path
