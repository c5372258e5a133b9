"""A stand-in for an executor process, for the pool's unit tests: no process, the real frames.

A FakeExecutor holds a real multiprocessing pipe, the kind Pool.serve waits on with
multiprocessing.connection.wait(): the pool keeps one end (``conn``), the test speaks for
the executor on the other, with executor/protocol.py's frames (Ready, ImportFailed, Log,
Done) encoded as an executor encodes them. Until told, a fake says nothing: it hangs, as a
stuck executor does. ``crash`` ends it as a crashed process ends (EOF on the pipe, an exit
code); ``crash(keep_pipe=True)`` as one whose forked child still holds the pipe (only the
OS knows it ended).

FakeExecutors is the pool's StartExecutor; Clock its clock; Trees its TreeMeasurer.
"""

from __future__ import annotations

import itertools
import multiprocessing
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from common.proctree import Usage
from common.vocabulary import FailureKind
from executor.protocol import (
    Done,
    FromExecutor,
    ImportFailed,
    Log,
    Ready,
    Run,
    Stop,
    ToExecutor,
    decode_from_executor,
    decode_to_executor,
)

MB = 1024 * 1024
_pids = itertools.count(50001)  # never 0: the pool logs and measures by pid


class FakeExecutor:
    """One executor as the pool sees it (supervisor.pool.executors.ExecutorHandle)."""

    def __init__(self, slot: int, generation: int, scratch: Path | None) -> None:
        self.slot = slot
        self.generation = generation
        self.scratch = scratch
        self.pid = next(_pids)
        self.conn, self.end = multiprocessing.Pipe(duplex=True)  # the pool's end, the executor's end
        self.code: int | None = None  # its exit code once it ended
        self.kills = 0
        self.stopped = False
        self.sent: list[ToExecutor] = []  # what the pool sent it, read so far (see received)

    # ---- the pool's side ---------------------------------------------------------------------

    def send(self, frame: ToExecutor) -> None:
        self.conn.send_bytes(frame.encode())

    def recv(self) -> FromExecutor:
        return decode_from_executor(self.conn.recv_bytes())

    def alive(self) -> bool:
        return self.code is None

    def exitcode(self) -> int | None:
        return self.code

    def join(self, timeout: float) -> None:
        """A fake has ended or hangs for ever: nothing to wait for."""

    def kill(self) -> int:
        self.kills += 1
        count = 1 if self.code is None else 0  # a process already gone is not signalled
        if self.code is None:
            self.code = -signal.SIGKILL if hasattr(signal, "SIGKILL") else 1
        self.received()  # what the pool sent before the kill stays readable for the test
        self.end.close()
        self.conn.close()
        return count

    def stop(self, timeout: float) -> None:
        try:
            self.send(Stop())
        except (OSError, ValueError):
            pass
        self.stopped = True
        self.kill()

    # ---- the executor's side, on command -----------------------------------------------------

    def say(self, frame: FromExecutor) -> None:
        self.end.send_bytes(frame.encode())

    def say_raw(self, data: bytes) -> None:
        """Bytes that are not a frame of this build (task code writing into the pipe)."""
        self.end.send_bytes(data)

    def ready(self, rss: int = 100 * MB, cpu: float = 0.5) -> None:
        self.say(Ready(rss, cpu))

    def import_failed(self, error: str = "Traceback (most recent call last):\nImportError: broken") -> None:
        self.say(ImportFailed(error))

    def log(self, msg: str, task_id: Any = None, level: int = 20, name: str = "task.echo") -> None:
        self.say(Log(level, name, msg, task_id))

    def done(self, result: bytes = b"null", ok: bool = True, kind: FailureKind | None = None, seq: int | None = None,
             rss: int = 100 * MB, cpu: float = 0.5, traceback: str | None = None) -> None:
        """The Done of the last Run it received, unless ``seq`` says otherwise."""
        if seq is None:
            runs = [f for f in self.received() if isinstance(f, Run)]
            assert runs, "done() before any run"
            seq = runs[-1].seq
        self.say(Done(seq, ok, result, rss, cpu, kind, traceback))

    def received(self) -> list[ToExecutor]:
        """Every frame the pool has sent it so far."""
        while not self.end.closed and self.end.poll():
            self.sent.append(decode_to_executor(self.end.recv_bytes()))
        return list(self.sent)

    def crash(self, code: int = -11, keep_pipe: bool = False) -> None:
        """It ends by itself with this exit code (-11: SIGSEGV)."""
        self.code = code
        if not keep_pipe:
            self.end.close()


class FakeExecutors:
    """The pool's StartExecutor: a FakeExecutor per start; ``failures`` make the next starts raise."""

    def __init__(self) -> None:
        self.started: list[FakeExecutor] = []
        self.failures: list[Exception] = []

    def __call__(self, slot: int, generation: int, scratch: Path) -> FakeExecutor:
        if self.failures:
            raise self.failures.pop(0)
        ex = FakeExecutor(slot, generation, scratch)
        self.started.append(ex)
        return ex

    def of(self, slot: int) -> FakeExecutor:
        """The slot's latest executor."""
        return [ex for ex in self.started if ex.slot == slot][-1]

    def starts(self, slot: int) -> int:
        return sum(1 for ex in self.started if ex.slot == slot)

    def close(self) -> None:
        for ex in self.started:
            ex.conn.close()
            ex.end.close()


class Clock:
    """The pool's monotonic clock, moved by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Trees:
    """The pool's TreeMeasurer: each executor's tree as the test sets it (default: the executor alone, small)."""

    def __init__(self) -> None:
        self.usages: dict[int, Usage] = {}
        self.reads: list[int] = []
        self.retained: list[int] = []
        self.closed = False

    def set(self, pid: int, rss: int, cpu: float, processes: int = 1) -> None:
        self.usages[pid] = Usage(rss, cpu, [pid + i for i in range(processes)])

    def retain(self, roots: Iterable[int]) -> None:
        self.retained = list(roots)

    def usage(self, root: int) -> Usage:
        self.reads.append(root)
        return self.usages.get(root, Usage(10 * MB, 0.0, [root]))

    def close(self) -> None:
        self.closed = True
