"""The supervisor's nouns, shared by the network, the store and the pool: a Task as the
server gave it, a Claim (a task the journal holds), and the result body the server takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from executor.protocol import FailureKind


@dataclass
class Task:
    id: Any  # echoed back with its JSON type unchanged
    task_type: str
    params: Any


@dataclass
class Claim:
    key: str  # journal key; the result is stored under it too
    task: Task
    malformed: str | None = None  # set when the task cannot run; it is failed back at once
    kind: FailureKind = FailureKind.UNKNOWN_TASK  # the failure kind of a malformed task


def result_body(task_id: Any, worker_id: str, ok: bool, raw_result: bytes) -> bytes:
    """The submit_result body exactly as the 1.0.x worker posts it; raw_result is JSON bytes."""
    return orjson.dumps({
        "task_id": task_id,
        "worker_id": worker_id,
        "status": "success" if ok else "failure",
        "result": orjson.Fragment(raw_result),
    })
