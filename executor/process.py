"""The executor process: import the registry once, then run tasks sent over a private pipe.

Frames are orjson bytes. Supervisor -> executor: {"op": "run", ...} or {"op": "stop"}.
Executor -> supervisor: "ready" (or "import_error"), "log" lines, and one "done"
per task whose result travels as raw JSON after a newline, so the supervisor can
forward it to the server without decoding it again.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import orjson
import psutil

from executor import api, sandbox
from executor.conventions import TaskFailure, failure, interpret
from executor.registry import load_config, registry_of


class _Channel:
    """The pipe to the supervisor; tasks may log from threads, so sends are serialised."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, header: dict[str, Any], raw: bytes | None = None) -> None:
        data = orjson.dumps(header)
        if raw is not None:
            data += b"\n" + raw
        with self.lock:
            self.conn.send_bytes(data)


class _PipeLogHandler(logging.Handler):
    def __init__(self, channel: _Channel) -> None:
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            task = api._current
            self.channel.send({"op": "log", "level": record.levelno, "name": record.name,
                               "msg": msg, "task_id": task["id"] if task else None})
        except Exception:  # noqa: BLE001 - a log line must never break a task
            pass


class _PrintForwarder:
    """Stands in for sys.stdout/stderr: whole lines go to the worker log with the task id."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.buf = ""
        self.logger = logging.getLogger("task.print")

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.strip():
                self.logger.log(self.level, line)
        return len(text)

    def flush(self) -> None:
        if self.buf.strip():
            self.logger.log(self.level, self.buf)
        self.buf = ""

    def isatty(self) -> bool:
        return False


def _run_task(registry: dict, msg: dict, result_max_bytes: int) -> tuple[bool, bytes, str | None]:
    """Run one task; returns (ok, result as JSON bytes, traceback text or None)."""
    fn = registry.get(msg["task_type"])
    params = msg.get("params")
    if fn is None:
        return False, orjson.dumps(failure(f"unknown task type {msg['task_type']!r}", "unknown_task")), None
    if not isinstance(params, dict):
        return False, orjson.dumps(failure(f"params must be a JSON object, got {type(params).__name__}", "bad_params")), None
    try:
        value = fn(**params)
    except TaskFailure as exc:
        return False, orjson.dumps(failure(str(exc), "task_failed")), None
    except TypeError as exc:
        tb = traceback.format_exc()
        # A TypeError raised by the call itself (not inside the task) means the params do not fit.
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            return False, orjson.dumps(failure(f"bad params for {msg['task_type']}: {exc}", "bad_params")), None
        return False, orjson.dumps(failure(f"{type(exc).__name__}: {exc}", "exception")), tb
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from a task are failures too
        return False, orjson.dumps(failure(f"{type(exc).__name__}: {exc}", "exception")), traceback.format_exc()
    ok, result = interpret(value)
    try:
        raw = orjson.dumps(result)
    except TypeError as exc:
        return False, orjson.dumps(failure(f"result is not JSON-serialisable: {exc}", "unserializable_result")), None
    if len(raw) > result_max_bytes:
        text = f"result is {len(raw)} bytes, over the cap of {result_max_bytes} (RESULT_MAX_BYTES)"
        return False, orjson.dumps(failure(text, "result_too_large")), None
    return ok, raw, None


def _emptied(folder: str) -> bool:
    """Empty the scratch folder; False if it is gone. Looking first is the cheap case: most tasks
    leave nothing, and making and removing a folder per task cost ~0.5 ms here."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return False
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as exc:  # e.g. still open on Windows: the next task would find it
            logging.getLogger("hive.executor").warning("scratch: cannot remove %s: %s", entry.name, exc)
    return True


def main(conn: Connection, init: dict[str, Any]) -> None:
    """Spawn target. ``init``: slot, config, token, priority, parent_pid, settings, result_max_bytes."""
    sandbox.enter(init["token"], init["priority"])
    sandbox.watch_parent(init["parent_pid"])
    channel = _Channel(conn)
    handler = _PipeLogHandler(channel)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if init.get("debug") else logging.INFO)
    sys.stdout = _PrintForwarder(logging.INFO)
    sys.stderr = _PrintForwarder(logging.WARNING)
    api._settings = dict(init.get("settings", {}))

    try:
        registry = registry_of(load_config(init.get("config")))
    except BaseException:  # noqa: BLE001 - report any import failure, then exit
        channel.send({"op": "import_error", "error": traceback.format_exc()})
        os._exit(3)

    me = psutil.Process()
    # "cpu" is the same user+system+reaped-children sum the supervisor's limit check reads, so
    # the next task's CPU baseline costs the supervisor nothing at dispatch.
    channel.send({"op": "ready", "pid": os.getpid(), "rss": me.memory_info().rss, "cpu": sum(os.times()[:4])})
    result_max_bytes = int(init["result_max_bytes"])
    home_cwd = os.getcwd()
    made = None  # the scratch folder once created: one per executor, emptied after each task

    while True:
        try:
            msg = orjson.loads(conn.recv_bytes())
        except (EOFError, OSError):
            break  # supervisor gone or closed our pipe
        if msg.get("op") != "run":
            break
        scratch = msg.get("scratch")
        if scratch:
            if scratch != made:
                os.makedirs(scratch, exist_ok=True)
                made = scratch
            os.chdir(scratch)
        api._current = msg
        started = time.time()
        try:
            ok, raw, tb = _run_task(registry, msg, result_max_bytes)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            api._current = None
            os.chdir(home_cwd)
            leftovers = sandbox.clean_leftovers()
            if leftovers:
                logging.getLogger("hive.executor").warning(
                    "task %r left %d process(es) running; killed them", msg["id"], leftovers)
            if scratch and not _emptied(scratch):
                made = None  # the task removed the folder itself: make it again next time
        header = {"op": "done", "seq": msg["seq"], "ok": ok, "started": started,
                  "finished": time.time(), "rss": me.memory_info().rss, "cpu": sum(os.times()[:4])}
        if tb:
            header["traceback"] = tb
        channel.send(header, raw)
