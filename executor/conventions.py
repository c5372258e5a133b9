"""The fleet's task return convention, turned into (ok, result-or-error) for the wire.

Deployed tasks return {"status": "success", "data": X}; the server gets result X.
Any other dict with a "status" is a failure whose error is its "message". Any other
return value is a success with that value as the result.
"""

from __future__ import annotations

from typing import Any


class TaskFailure(Exception):
    """Raise from a task to fail cleanly: the server gets this message, kind task_failed."""


def failure(error: str, kind: str) -> dict[str, str]:
    """The result body of a failed task: one readable line plus a machine-readable kind."""
    line = " ".join(str(error).split()) or kind
    return {"error": line[:2000], "kind": kind}


def interpret(value: Any) -> tuple[bool, Any]:
    if isinstance(value, dict) and "status" in value:
        if value["status"] == "success":
            return True, value.get("data")
        message = value.get("message") or value.get("error") or f"task returned status {value['status']!r}"
        return False, failure(str(message), "task_failed")
    return True, value
