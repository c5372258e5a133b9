"""The supervisor's nouns, shared by the network, the store and the pool: a Task as the
server gave it, a Claim (a task the journal holds), and the result body the server takes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from common.vocabulary import FailureKind


@dataclass
class Task:
    # The id's value, for logs and the executor; when no value orjson can write carries it exactly
    # (an integer beyond 64 bits, a lone surrogate), its JSON text as a str.
    id: Any
    task_type: str
    params: Any
    # The id exactly as the server sent it (JSON bytes), echoed in the result; None when
    # orjson.dumps(id) is those bytes (the usual number or string: nothing to keep).
    id_json: bytes | None = None

    def id_bytes(self) -> bytes:
        return self.id_json if self.id_json is not None else orjson.dumps(self.id)


@dataclass
class Claim:
    key: str  # journal key; the result is stored under it too
    task: Task
    malformed: str | None = None  # set when the task cannot run; it is failed back at once
    kind: FailureKind = FailureKind.UNKNOWN_TASK  # the failure kind of a malformed task


def result_body(task_id_json: bytes, worker_id: str, ok: bool, raw_result: bytes) -> bytes:
    """The submit_result body exactly as the 1.0.x worker posts it; the task id and raw_result are
    JSON bytes (the id as the server sent it, see Task.id_json)."""
    return orjson.dumps({
        "task_id": orjson.Fragment(task_id_json),
        "worker_id": worker_id,
        "status": "success" if ok else "failure",
        "result": orjson.Fragment(raw_result),
    })


def loads_standard(data: bytes) -> Any:
    """JSON read as a standard parser reads it: orjson (fast), and what orjson refuses but the
    standard accepts or tolerates (a UTF-8 BOM, NaN/Infinity, a lone surrogate escape such as
    \\ud83d, a number beyond a double) by Python's json, as 1.0.x's requests did. Raises ValueError
    (orjson.JSONDecodeError and UnicodeDecodeError are ValueErrors) or RecursionError."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    return json.loads(data.decode("utf-8-sig") if isinstance(data, bytes) else data)
