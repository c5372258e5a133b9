"""One executor process as the supervisor sees it: start, send a task, read frames, kill.

The pool knows an executor only as an ``ExecutorHandle`` made by a ``StartExecutor``: this
module's ``Executor`` in production (``start_executor``), tests/support/fake_executor.py in tests."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
from collections.abc import Callable
from multiprocessing import resource_tracker
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from common import treekill
from common.vocabulary import TOKEN_ENV
from executor import process as executor_process
from executor.protocol import FromExecutor, Stop, ToExecutor, decode_from_executor
from supervisor.pool import winjob

if TYPE_CHECKING:  # the pipe's end: a PipeConnection on Windows (typeshed tells them apart)
    if sys.platform == "win32":
        from multiprocessing.connection import PipeConnection as Connection
    else:
        from multiprocessing.connection import Connection

# spawn everywhere: Linux runs then catch what would break on Windows.
CTX = multiprocessing.get_context("spawn")


# What Windows reports as the exit code of a process that crashed (NTSTATUS values).
_NTSTATUS = {0xC0000005: "access violation", 0xC00000FD: "stack overflow", 0xC0000409: "fail-fast abort",
             0xC0000017: "out of memory", 0xC000013A: "Ctrl+C", 0x40010004: "debugger terminated"}


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code > 255 and code in _NTSTATUS:
        return f"{_NTSTATUS[code]} (exit code 0x{code:08X})"
    return f"exit code {code}" + (f" (0x{code:08X})" if code > 255 else "")


class ExecutorHandle(Protocol):
    """What the pool asks of one started executor."""

    pid: int
    scratch: Path | None  # its tasks' working folder

    @property
    def conn(self) -> Connection | None:
        """The pool's end of its pipe: multiprocessing.connection.wait() waits on it."""
        ...

    def send(self, frame: ToExecutor) -> None: ...

    def recv(self) -> FromExecutor:
        """Raises EOFError/OSError when the executor is gone, ProtocolError for a frame it cannot read."""
        ...

    def alive(self) -> bool: ...

    def exitcode(self) -> int | None: ...

    def join(self, timeout: float) -> None:
        """Waits up to ``timeout`` for it to end by itself."""
        ...

    def kill(self) -> int:
        """Kills it and its whole tree; returns the processes signalled."""
        ...

    def stop(self, timeout: float) -> None:
        """Asks it to exit, then kills it."""
        ...


# Starts the executor of (slot, generation) with that scratch folder; raises when it cannot.
StartExecutor = Callable[[int, int, Path], ExecutorHandle]


def start_executor(init: dict[str, Any], place: Callable[[int], None] | None = None) -> StartExecutor:
    """The production StartExecutor: a real executor process, under the CPU cap ``place``."""
    def start(slot: int, generation: int, scratch: Path) -> ExecutorHandle:
        ex = Executor(slot, generation, init, scratch, place)
        ex.start()
        return ex
    return start


class Executor:
    def __init__(self, slot: int, generation: int, init: dict[str, Any], scratch: Path | None = None,
                 place: Callable[[int], None] | None = None) -> None:
        self.slot = slot
        self.scratch = scratch  # its tasks' working folder, made by the executor on first use
        self.token = f"{os.getpid()}-{slot}-{generation}."
        self.init = dict(init, slot=slot, token=self.token, parent_pid=os.getpid())
        self.conn: Connection | None = None
        self.process: multiprocessing.process.BaseProcess | None = None
        self.pid = 0
        self.job = None
        self.place = place  # puts the new process under the pool's CPU cap (cpucap.CpuCap.adopt)

    def start(self) -> None:
        parent_conn, child_conn = CTX.Pipe(duplex=True)
        self.process = CTX.Process(target=executor_process.main, args=(child_conn, self.init),
                                   name=f"hive-executor-{self.slot}", daemon=False)
        if os.name == "posix":
            # spawn starts multiprocessing's resource tracker lazily, with our environment:
            # start it first, or it would carry a tree token and die in that tree's kill.
            resource_tracker.ensure_running()
        # In the environment from birth (not set later), so the token is visible in
        # /proc/<pid>/environ of the executor itself and not only of its descendants.
        os.environ[TOKEN_ENV] = self.token
        try:
            self.process.start()
        finally:
            del os.environ[TOKEN_ENV]
        child_conn.close()
        self.conn = parent_conn
        self.pid = self.process.pid or 0
        if self.place is not None:
            self.place(self.pid)  # before adopt(): on Windows its own job must nest inside the cap's
        self.job = winjob.adopt(self.pid)

    def send(self, frame: ToExecutor) -> None:
        assert self.conn is not None
        self.conn.send_bytes(frame.encode())

    def recv(self) -> FromExecutor:
        """One frame. Raises EOFError/OSError when the executor is gone, ProtocolError when the
        frame is not one this build sends (a bug, or task code writing into the pipe)."""
        assert self.conn is not None
        return decode_from_executor(self.conn.recv_bytes())

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def exitcode(self) -> int | None:
        return None if self.process is None else self.process.exitcode

    def join(self, timeout: float) -> None:
        if self.process is not None:
            self.process.join(timeout)

    def kill(self) -> int:
        """Kill the executor and its whole tree; reap it. Returns processes signalled."""
        count = 0
        if winjob.terminate(self.job):
            count = 1
        if self.pid:
            count += treekill.kill_tree(self.pid, self.token)
        self.reap(timeout=5.0)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return count

    def stop(self, timeout: float) -> None:
        """Ask politely, then kill: used when the pool shuts down or recycles an idle executor."""
        try:
            self.send(Stop())
        except (OSError, ValueError):
            pass
        self.join(timeout)
        self.kill()

    def reap(self, timeout: float) -> None:
        self.join(timeout)
        if self.conn is not None:
            self.conn.close()
        winjob.close(self.job)
        self.job = None
