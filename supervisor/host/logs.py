"""Logging: console plus a size-rotated logs/worker.log in the home (production has no console)."""

from __future__ import annotations

import logging
import logging.handlers
import numbers
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from common.safetext import loggable, loggable_block, redact_url

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


class RotatingLog(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler whose rotation never costs a line or a backup.

    On Windows a file another program holds open cannot be renamed: a person following
    worker.log (PowerShell ``Get-Content -Wait``, Notepad++) or an antivirus scan. The stdlib's
    rollover then raised half-way, after shifting the older backups (worker.log.1 was deleted)
    and for every later record (64 of 150 lines lost in one test). Here worker.log is moved
    aside first; if it cannot be, nothing is touched, writing goes on into worker.log, and the
    rotation is tried again after ROTATE_RETRY seconds. A backup that cannot be moved stops the
    shifting there (it is never overwritten) and worker.log is put back.
    """

    ROTATE_RETRY = 10.0  # seconds between tries while a reader holds the file

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_at = 0.0
        self.postponed = 0  # tries since the last rotation that went through

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - name fixed by logging
        return time.monotonic() >= self.retry_at and bool(super().shouldRollover(record))

    def doRollover(self) -> None:  # noqa: N802 - name fixed by logging
        if self.stream:
            self.stream.close()
            self.stream = None
        held = self._rotate() if self.backupCount > 0 else None
        self.stream = stream = self._open()  # whatever happened: the next lines have a file
        if held is not None:
            self.postponed += 1
            self.retry_at = time.monotonic() + self.ROTATE_RETRY
            if self.postponed == 1:  # once per held period: a record of its own would recurse into emit()
                self._note(stream, logging.WARNING, f"log rotation postponed: {held}; writing on into {self.baseFilename}, "
                                                    f"trying again every {self.ROTATE_RETRY:g} s")
        elif self.postponed:
            self._note(stream, logging.INFO, f"log rotated after {self.postponed} postponed tries")
            self.postponed = 0

    def _rotate(self) -> str | None:
        """worker.log -> .1, .1 -> .2 ...; None when done, else why nothing (or only a gap) changed."""
        base = self.baseFilename
        aside = base + ".rotating"
        try:
            os.replace(base, aside)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{os.path.basename(base)} is held open by another program ({exc.strerror or exc})"
        problem = None
        for i in range(self.backupCount - 1, 0, -1):  # the oldest first; .backupCount is overwritten
            older = f"{base}.{i}"
            if os.path.exists(older):
                try:
                    os.replace(older, f"{base}.{i + 1}")
                except OSError as exc:  # held: stop here, or the next move would overwrite it
                    problem = f"{os.path.basename(older)} is held open by another program ({exc.strerror or exc})"
                    break
        if problem is None:
            try:
                os.replace(aside, base + ".1")
                return None
            except OSError as exc:
                problem = f"{os.path.basename(base)}.1 is held open by another program ({exc.strerror or exc})"
        try:
            os.replace(aside, base)  # back in place: nobody holds it (it could be moved a moment ago)
        except OSError as exc:  # its lines stay in the .rotating file; the next ones go to a new worker.log
            problem += f"; the current lines are in {os.path.basename(aside)} ({exc.strerror or exc})"
        return problem

    def _note(self, stream: TextIO, level: int, text: str) -> None:
        """A line of the handler's own, written straight into the file just opened."""
        record = logging.LogRecord("hive.logs", level, __file__, 0, text, (), None)
        stream.write(self.format(record) + self.terminator)
        stream.flush()


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
    file_handler = RotatingLog(
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
