"""Words both processes use: the failure kinds a task can end with, the failed-result body, and
the tree token's environment variable.

The supervisor, the executor, the store and the built-in tasks all speak these, so they live below
both sides (common/ imports neither supervisor/ nor executor/). The strings are the wire's.
"""

from __future__ import annotations

from enum import StrEnum

import orjson

from common.safetext import redact_url

# Set in each executor's environment from birth and inherited by everything it starts: how the
# supervisor finds (and kills) a task's whole tree, even processes that left it.
TOKEN_ENV = "HIVE_INTERNAL_TREE_TOKEN"

ERROR_MAX_CHARS = 2000


class FailureKind(StrEnum):
    """The "kind" of a failed result, as the server and the fleet's dashboards read it."""

    TASK_FAILED = "task_failed"  # the task said so (TaskFailure, or a status dict)
    EXCEPTION = "exception"  # the task raised, or the worker could not handle it
    BAD_PARAMS = "bad_params"
    TASK_TOO_LARGE = "task_too_large"  # the get_task answer passed GET_TASK_MAX_BYTES
    UNKNOWN_TASK = "unknown_task"  # also a task the server sent without a usable task_type
    UNSERIALIZABLE_RESULT = "unserializable_result"
    RESULT_TOO_LARGE = "result_too_large"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    CPU_LIMIT = "cpu_limit"
    CRASHED = "crashed"  # the executor died while running it
    INTERRUPTED = "interrupted"  # claimed by a worker run that ended before it had a result
    UPDATE_FAILED = "update_failed"


def failure(error: str, kind: FailureKind) -> dict[str, str]:
    """The result body of a failed task: one readable line plus a machine-readable kind."""
    # Credentials masked before the cut, which could end inside a password (a failed update's URL).
    line = redact_url(" ".join(str(error).split())) or str(kind)
    return {"error": line[:ERROR_MAX_CHARS], "kind": str(kind)}


def failure_json(error: str, kind: FailureKind) -> bytes:
    return orjson.dumps(failure(error, kind))
