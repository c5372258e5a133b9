"""The contract between the supervisor and its executors: every frame on the private pipe (the
failure kinds and the tree token they share are in common/vocabulary.py).

A frame is one orjson object with an "op". A done frame's result follows its header after a
newline as raw JSON (orjson never writes a bare newline), so the supervisor forwards it to the
server without decoding it. Both ends of the pipe come from the same build, so a frame that does
not decode is a bug or task code writing into the pipe: ``ProtocolError``, never a guess.

    supervisor -> executor: Run, Stop
    executor -> supervisor: Ready (or ImportFailed), Log lines, one Done per Run
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from common.vocabulary import FailureKind

# The built-in no-op task: never in TASK_REGISTRY, never claimed from the server (the supervisor
# refuses unknown types before any executor sees them); the supervisor sends it once per start to
# prove that a task makes the full round trip through an executor (supervisor/update/health.py).
PROBE_TASK = "__hive_probe__"



class ProtocolError(ValueError):
    """A frame that is not what this build sends."""


def _get(header: dict[str, Any], name: str, kind: type, optional: bool = False) -> Any:
    value = header.get(name)
    # Exact types: orjson makes no subclasses, and a bool (an int to isinstance) is never an int here.
    if type(value) is kind or (value is None and optional):
        return value
    if name not in header:
        raise ProtocolError(f"{header.get('op')!r} frame without {name!r}")
    raise ProtocolError(f"{header.get('op')!r} frame: {name!r} is {type(value).__name__}, not {kind.__name__}")


def _number(header: dict[str, Any], name: str) -> float:
    value = header.get(name)
    if type(value) is float or type(value) is int:
        return float(value)
    raise ProtocolError(f"{header.get('op')!r} frame: {name!r} is {type(value).__name__}, not a number")


# ---- supervisor -> executor ---------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """Run one task; ``scratch`` is its working folder, ``data`` its task type's persistent one."""

    op: ClassVar[str] = "run"
    seq: int  # the pool's number for this dispatch, echoed in Done
    id: Any  # the server's task id, any JSON value
    task_type: str
    params: Any  # checked by the executor: not a dict is a bad_params failure
    scratch: str
    data: str

    def encode(self) -> bytes:
        return orjson.dumps({"op": self.op, "seq": self.seq, "id": self.id, "task_type": self.task_type,
                             "params": self.params, "scratch": self.scratch, "data": self.data})

    @classmethod
    def _decode(cls, header: dict[str, Any], raw: bytes | None) -> Run:
        if "id" not in header:
            raise ProtocolError("'run' frame without 'id'")
        return cls(_get(header, "seq", int), header["id"], _get(header, "task_type", str), header.get("params"),
                   _get(header, "scratch", str), _get(header, "data", str))


@dataclass(slots=True)
class Stop:
    """Exit after the current task (the executor is idle whenever the pool sends it)."""

    op: ClassVar[str] = "stop"

    def encode(self) -> bytes:
        return b'{"op":"stop"}'

    @classmethod
    def _decode(cls, header: dict[str, Any], raw: bytes | None) -> Stop:
        return cls()


# ---- executor -> supervisor ---------------------------------------------------------------------


@dataclass(slots=True)
class Ready:
    """The registry is imported. ``cpu`` is the executor's user+system+reaped-children seconds, the
    sum the supervisor's CPU limit reads, so a task's CPU baseline costs nothing at dispatch."""

    op: ClassVar[str] = "ready"
    rss: int  # bytes at start-up: the base of EXECUTOR_MEMORY_GROWTH_MB
    cpu: float

    def encode(self) -> bytes:
        return orjson.dumps({"op": self.op, "rss": self.rss, "cpu": self.cpu})

    @classmethod
    def _decode(cls, header: dict[str, Any], raw: bytes | None) -> Ready:
        return cls(_get(header, "rss", int), _number(header, "cpu"))


@dataclass(slots=True)
class ImportFailed:
    """The task registry could not be imported; the executor exits after sending it."""

    op: ClassVar[str] = "import_error"
    error: str  # the traceback

    def encode(self) -> bytes:
        return orjson.dumps({"op": self.op, "error": self.error})

    @classmethod
    def _decode(cls, header: dict[str, Any], raw: bytes | None) -> ImportFailed:
        return cls(_get(header, "error", str))


@dataclass(slots=True)
class Log:
    """One log line of task code (logging or print); ``task_id`` is None between tasks."""

    op: ClassVar[str] = "log"
    level: int
    name: str
    msg: str
    task_id: Any = None

    def encode(self) -> bytes:
        return orjson.dumps({"op": self.op, "level": self.level, "name": self.name, "msg": self.msg,
                             "task_id": self.task_id})

    @classmethod
    def _decode(cls, header: dict[str, Any], raw: bytes | None) -> Log:
        return cls(_get(header, "level", int), _get(header, "name", str), _get(header, "msg", str),
                   header.get("task_id"))


@dataclass(slots=True)
class Done:
    """The end of one Run. ``result`` is JSON bytes: the task's result, or failure() when not ``ok``
    (then ``kind`` is its kind, so the supervisor never decodes the result)."""

    op: ClassVar[str] = "done"
    seq: int
    ok: bool
    result: bytes
    rss: int  # after the task: recycling on growth reads it
    cpu: float  # as in Ready: the next task's CPU baseline
    kind: FailureKind | None = None
    traceback: str | None = None  # for the worker log; the server gets only the one-line error

    def encode(self) -> bytes:
        header: dict[str, Any] = {"op": self.op, "seq": self.seq, "ok": self.ok, "rss": self.rss, "cpu": self.cpu}
        if self.kind is not None:
            header["kind"] = self.kind
        if self.traceback is not None:
            header["traceback"] = self.traceback
        return orjson.dumps(header) + b"\n" + self.result

    @classmethod
    def _decode(cls, header: dict[str, Any], raw: bytes | None) -> Done:
        if raw is None:
            raise ProtocolError("'done' frame without a result")
        ok = _get(header, "ok", bool)
        kind = _get(header, "kind", str, optional=True)
        try:
            kind = None if kind is None else FailureKind(kind)
        except ValueError:
            raise ProtocolError(f"'done' frame: unknown failure kind {kind!r}") from None
        if not ok and kind is None:
            raise ProtocolError("'done' frame of a failure without its kind")
        return cls(_get(header, "seq", int), ok, raw, _get(header, "rss", int), _number(header, "cpu"), kind,
                   _get(header, "traceback", str, optional=True))


ToExecutor = Run | Stop
FromExecutor = Ready | ImportFailed | Log | Done

_TO_EXECUTOR: dict[str, Any] = {cls.op: cls for cls in (Run, Stop)}
_FROM_EXECUTOR: dict[str, Any] = {cls.op: cls for cls in (Ready, ImportFailed, Log, Done)}


def _decode(data: bytes, table: dict[str, Any]) -> Any:
    head, sep, raw = data.partition(b"\n")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"frame is a JSON {type(header).__name__}, not an object")
    cls = table.get(header.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown op {header.get('op')!r}")
    return cls._decode(header, raw if sep else None)


def decode_to_executor(data: bytes) -> ToExecutor:
    """A frame the supervisor sent. Raises ProtocolError."""
    return _decode(data, _TO_EXECUTOR)


def decode_from_executor(data: bytes) -> FromExecutor:
    """A frame an executor sent. Raises ProtocolError."""
    return _decode(data, _FROM_EXECUTOR)
