"""The executor process: import the registry once, then run tasks sent over a private pipe.

The frames are executor/protocol.py's: Run and Stop in; Ready (or ImportFailed), Log lines
and one Done per Run out.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

import orjson
import psutil

from common.vocabulary import FailureKind, failure, failure_json
from executor import api, sandbox
from executor.api import TaskFailure
from executor.protocol import (
    PROBE_TASK,
    Done,
    FromExecutor,
    ImportFailed,
    Log,
    ProtocolError,
    Ready,
    Run,
    decode_to_executor,
)
from executor.registry import load_config, registry_of


class _Channel:
    """The pipe to the supervisor; tasks may log from threads, so sends are serialised."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, frame: FromExecutor) -> None:
        data = frame.encode()
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
            self.channel.send(Log(record.levelno, record.name, msg, task.id if task else None))
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


def interpret(value: Any) -> tuple[bool, Any]:
    """The fleet's return convention, as (ok, result or failure body): {"status": "success",
    "data": X} is result X; any other dict with a "status" fails with its "message"; any
    other value is a success with that value as the result."""
    if isinstance(value, dict) and "status" in value:
        if value["status"] == "success":
            return True, value.get("data")
        message = value.get("message") or value.get("error") or f"task returned status {value['status']!r}"
        return False, failure(str(message), FailureKind.TASK_FAILED)
    return True, value


# (ok, result as JSON bytes, failure kind or None, traceback text or None)
Outcome = tuple[bool, bytes, FailureKind | None, str | None]


def _failed(error: str, kind: FailureKind, tb: str | None = None) -> Outcome:
    return False, failure_json(error, kind), kind, tb


def _probe() -> dict:
    """PROBE_TASK: what any task returns, from an executor that imported the registry."""
    return {"status": "success", "data": {"probe": "ok", "pid": os.getpid()}}


def _run_task(registry: dict, run: Run, result_max_bytes: int) -> Outcome:
    fn = _probe if run.task_type == PROBE_TASK else registry.get(run.task_type)
    params = run.params
    if fn is None:
        return _failed(f"unknown task type {run.task_type!r}", FailureKind.UNKNOWN_TASK)
    if not isinstance(params, dict):
        return _failed(f"params must be a JSON object, got {type(params).__name__}", FailureKind.BAD_PARAMS)
    try:
        value = fn(**params)
    except TaskFailure as exc:
        return _failed(str(exc), FailureKind.TASK_FAILED)
    except TypeError as exc:
        tb = traceback.format_exc()
        # A TypeError raised by the call itself (not inside the task) means the params do not fit.
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            return _failed(f"bad params for {run.task_type}: {exc}", FailureKind.BAD_PARAMS)
        return _failed(f"{type(exc).__name__}: {exc}", FailureKind.EXCEPTION, tb)
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from a task are failures too
        return _failed(f"{type(exc).__name__}: {exc}", FailureKind.EXCEPTION, traceback.format_exc())
    ok, result = interpret(value)
    try:
        raw = orjson.dumps(result)
    except TypeError as exc:
        return _failed(f"result is not JSON-serialisable: {exc}", FailureKind.UNSERIALIZABLE_RESULT)
    if len(raw) > result_max_bytes:
        text = f"result is {len(raw)} bytes, over the cap of {result_max_bytes} (RESULT_MAX_BYTES)"
        return _failed(text, FailureKind.RESULT_TOO_LARGE)
    return ok, raw, None if ok else FailureKind(result["kind"]), None


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
            logging.getLogger("executor").warning("scratch: cannot remove %s: %s", entry.name, exc)
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
        channel.send(ImportFailed(traceback.format_exc()))
        os._exit(3)

    me = psutil.Process()
    channel.send(Ready(me.memory_info().rss, _cpu_seconds()))
    result_max_bytes = int(init["result_max_bytes"])
    home_cwd = os.getcwd()
    made = None  # the scratch folder once created: one per executor, emptied after each task

    while True:
        try:
            run = decode_to_executor(conn.recv_bytes())
        except (EOFError, OSError, ProtocolError):
            break  # supervisor gone, or closed our pipe, or (our bug) sent what we cannot read
        if not isinstance(run, Run):
            break  # Stop
        scratch = run.scratch
        if scratch:
            if scratch != made:
                os.makedirs(scratch, exist_ok=True)
                made = scratch
            os.chdir(scratch)
        api._current = run
        try:
            ok, raw, kind, tb = _run_task(registry, run, result_max_bytes)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            api._current = None
            os.chdir(home_cwd)
            leftovers = sandbox.clean_leftovers()
            if leftovers:
                logging.getLogger("executor").warning(
                    "task %r left %d process(es) running; killed them", run.id, leftovers)
            if scratch and not _emptied(scratch):
                made = None  # the task removed the folder itself: make it again next time
        channel.send(Done(run.seq, ok, raw, me.memory_info().rss, _cpu_seconds(), kind, tb or None))


def _cpu_seconds() -> float:
    """User + system + reaped children's: the sum the supervisor's CPU limit reads of this process."""
    return sum(os.times()[:4])
