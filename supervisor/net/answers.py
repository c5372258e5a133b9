"""What an answer of the Hive server means, decided without a socket (h11's sans-IO style).

The transport (client.py) hands over what it read, status, headers and a body already capped
in size, and gets back one small outcome: a Task, NO_TASKS, or the error to raise. Errors are
returned, not raised, so the decisions can be tested as plain values and the transport stays
the only place that raises. Every answer is hostile until parsed: the task's id and params may
not nest deeper than MAX_NESTING.

An answer is read as a standard JSON parser reads it (1.0.x used requests' .json(), i.e. Python's
json): orjson first, and what orjson refuses (a UTF-8 BOM, NaN/Infinity, a lone surrogate escape,
a number beyond a double) by Python's json. The task id is echoed back byte for byte as the server
wrote it (Task.id_json, task_id_of), whatever its size or type.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from itertools import chain, compress
from typing import Any, Literal, Protocol

import orjson

from common.vocabulary import FailureKind
from supervisor.model import Task, loads_standard

# Containers inside a task's id or params: far beyond any real task, far below what orjson
# (254 on dumps) and the executor pipe can take.
MAX_NESTING = 64
NO_TASKS: Literal["no_tasks"] = "no_tasks"


@dataclass
class ServerError(Exception):
    """The server could not be used this time; ``retry_after`` in seconds when it said so."""

    message: str
    retry_after: float | None = None
    permanent: bool = False  # a 4xx: the server refused this request (a result is still retried, submitter.py)
    status: int | None = None  # the HTTP status when the server answered; None when it did not

    def __str__(self) -> str:
        return self.message


@dataclass
class MalformedTask(Exception):
    """A task answer we cannot run; has an id when the server gave one (then we fail it back)."""

    message: str
    task_id: Any = None
    has_id: bool = False
    task_id_json: bytes | None = None  # as Task.id_json
    task_type: str = ""
    kind: FailureKind = FailureKind.UNKNOWN_TASK  # the failure kind it is answered with

    def __str__(self) -> str:
        return self.message


TaskOutcome = Task | Literal["no_tasks"] | ServerError | MalformedTask


def snippet(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text + ("..." if len(body) > limit else ""))


_IS_DICT = {dict}.__contains__
_IS_LIST = {list}.__contains__
_IS_CONTAINER = {dict, list}.__contains__


def too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """True if lists and objects nest more than ``limit`` levels in ``value``. Level by level and
    iterative (a recursive walk is exactly what a deeply nested answer would break), with the
    per-item work in map/compress/chain: 8x faster than a Python loop over the items, which cost
    300 us on a 300-product prom_pars task here."""
    if not _IS_CONTAINER(type(value)):
        return False  # the usual id: a number or a string
    level = [value]
    for _ in range(limit + 1):
        level = list(compress(level, map(_IS_CONTAINER, map(type, level))))
        if not level:
            return False
        types = list(map(type, level))
        level = list(chain(chain.from_iterable(map(dict.values, compress(level, map(_IS_DICT, types)))),
                           chain.from_iterable(compress(level, map(_IS_LIST, types)))))
    return True


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None if unusable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError):
        return None


class Headers(Protocol):
    """An answer's headers as the transport hands them over: an http.client.HTTPMessage (or a dict)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


def _header(headers: Headers, name: str) -> str | None:
    """Case-insensitive, as HTTP says; only asked on the error paths, so a scan is cheap enough."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def status_error(endpoint: str, status: int, headers: Headers, body: bytes) -> ServerError | None:
    """The error a non-2xx answer of either endpoint is, or None for a 2xx."""
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return ServerError(f"{endpoint}: HTTP {status} redirect to {_header(headers, 'location')!r} "
                           "(redirects are not followed: put the final address in SERVER_URL)", status=status)
    permanent = 400 <= status < 500 and status not in (408, 429)
    return ServerError(f"{endpoint}: HTTP {status} {snippet(body)}",
                       retry_after=retry_after(_header(headers, "retry-after")), permanent=permanent,
                       status=status)


_WS = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]
_DECODER = json.JSONDecoder()


def raw_members(text: str, cut: bool = False) -> dict[str, str]:
    """The JSON text of each top-level member of the object ``text``, exactly as written (the last
    one when a name repeats, as parsers keep it). Each value is skipped by the standard library's C
    scanner; only for ids the fast path cannot vouch for (classify_task) and for the head of an
    answer too large to read whole. Raises ValueError (or RecursionError) if ``text`` is not an
    object; with ``cut`` (text cut short) returns instead the members whose value ends, followed by
    "," or "}", before the cut (a number at the very end may go on past it)."""
    members: dict[str, str] = {}
    try:
        idx = _WS(text, 0).end()
        if text[idx:idx + 1] != "{":
            raise ValueError("not a JSON object")
        idx = _WS(text, idx + 1).end()
        if text[idx:idx + 1] == "}":
            return members
        while True:
            if text[idx:idx + 1] != '"':
                raise ValueError(f"a member name expected at {idx}")
            key, idx = json.decoder.scanstring(text, idx + 1)  # type: ignore[attr-defined]
            idx = _WS(text, idx).end()
            if text[idx:idx + 1] != ":":
                raise ValueError(f"':' expected at {idx}")
            start = _WS(text, idx + 1).end()
            end = _DECODER.raw_decode(text, start)[1]
            idx = _WS(text, end).end()
            if text[idx:idx + 1] not in ("}", ","):
                raise ValueError(f"',' expected at {idx}")
            members[key] = text[start:end]
            if text[idx] == "}":
                return members
            idx = _WS(text, idx + 1).end()
    except (ValueError, RecursionError):
        if cut:
            return members
        raise


def task_id_of(body: bytes, value: Any, fast: bool) -> tuple[Any, bytes | None]:
    """The id to log and hand to the executor, and its exact JSON bytes (None when orjson.dumps of
    the value gives them). The fast path: an id orjson read as an int or str whose re-encoding is
    in the body right after "id": (a byte search). Anything else (a float, an integer beyond 64 bits
    that orjson turned into one, a container, an escaped string, an answer only json could read):
    the id's text is cut from the body itself."""
    if fast and type(value) in (int, str):
        dumped = orjson.dumps(value)
        if b'"id":' + dumped in body or b'"id": ' + dumped in body:
            return value, None
    try:
        raw = raw_members(body.decode("utf-8-sig")).get("id")
    except (ValueError, RecursionError):
        raw = None
    if raw is None:  # cannot happen for an answer that parsed; keep what was parsed
        return value, None
    exact = json.loads(raw)  # the standard library keeps integers of any size exactly
    try:
        same = orjson.dumps(exact) == raw.encode("utf-8")
    except (orjson.JSONEncodeError, TypeError):
        return raw, raw.encode("utf-8")  # no value orjson can carry: the executor and logs get its text
    return exact, None if same else raw.encode("utf-8")


def classify_task(status: int, headers: Headers, body: bytes) -> TaskOutcome:
    """What get_task's answer means: a Task, NO_TASKS, or the ServerError / MalformedTask it is."""
    error = status_error("get_task", status, headers, body)
    if error is not None:
        return error
    fast = True
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        fast = False
        try:
            answer = loads_standard(body)
        except (ValueError, RecursionError):
            return ServerError(f"get_task: answer is not JSON: {snippet(body)}")
    if not isinstance(answer, dict):
        return ServerError(f"get_task: answer is not a JSON object: {snippet(body)}")
    if answer.get("status") == NO_TASKS and "id" not in answer:
        return NO_TASKS
    if "id" not in answer or answer["id"] is None:
        return MalformedTask(f"get_task: task without an id: {snippet(body)}")
    if too_deep(answer["id"]):
        # It could not be echoed back (nor journalled): skipped; the server's requeue owns it.
        return MalformedTask(f"get_task: task id nested deeper than {MAX_NESTING} levels, cannot answer it: "
                             f"{snippet(body)}")
    task_id, id_json = task_id_of(body, answer["id"], fast)
    task_type = answer.get("task_type")
    if not isinstance(task_type, str) or not task_type:
        return MalformedTask(f"get_task: task {task_id!r} has no task_type: {snippet(body)}",
                             task_id=task_id, has_id=True, task_id_json=id_json)
    params = answer.get("params", {})
    if too_deep(params):
        return MalformedTask(f"params nested deeper than {MAX_NESTING} levels", task_id=task_id, has_id=True,
                             task_type=task_type, kind=FailureKind.BAD_PARAMS, task_id_json=id_json)
    if not fast:
        try:
            orjson.dumps(params)  # what the executor is sent; only an answer json had to read can fail it
        except (orjson.JSONEncodeError, TypeError) as exc:
            return MalformedTask(f"params cannot be passed to a task ({exc})", task_id=task_id, has_id=True,
                                 task_type=task_type, kind=FailureKind.BAD_PARAMS, task_id_json=id_json)
    return Task(id=task_id, task_type=task_type, params=params, id_json=id_json)


def classify_submit(status: int, headers: Headers, body: bytes) -> ServerError | None:
    """None when submit_result's answer accepts the result (its body is never used), else the error."""
    return status_error("submit_result", status, headers, body)



# An answer over GET_TASK_MAX_BYTES is never parsed whole; its first bytes are, for the id.
HEAD_BYTES = 64 * 1024


def _cut_text(head: bytes) -> str:
    """The first bytes of an answer as text: a character cut in two at the end is dropped; text
    that is not UTF-8 before that is no answer to read an id from ("")."""
    head = head.removeprefix(b"\xef\xbb\xbf")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return head[:exc.start].decode("utf-8") if exc.start >= len(head) - 3 else ""


def classify_too_large(message: str, head: bytes) -> ServerError | MalformedTask:
    """A get_task answer over GET_TASK_MAX_BYTES: a task failed back to the server when its id can
    be read from the answer's first HEAD_BYTES (v1 has no lease: unanswered, it stays claimed for
    good), else the error the backoff applies to."""
    fields = raw_members(_cut_text(head[:HEAD_BYTES]), cut=True)
    raw_id = fields.get("id")
    try:
        task_id = json.loads(raw_id) if raw_id is not None else None  # any size of integer, as sent
    except ValueError:
        task_id = None
    if raw_id is None or task_id is None or too_deep(task_id):
        return ServerError(f"get_task: {message}; dropped (no task id in its first {len(head[:HEAD_BYTES])} bytes)")
    try:
        task_type = json.loads(fields.get("task_type", '""'))
    except ValueError:
        task_type = ""
    return MalformedTask(f"get_task: task {task_id!r}: {message}", task_id=task_id, has_id=True,
                         task_type=task_type if isinstance(task_type, str) else "", kind=FailureKind.TASK_TOO_LARGE,
                         task_id_json=raw_id.encode("utf-8"))  # echoed back exactly as sent
