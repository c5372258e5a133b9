"""Hive protocol v1 on the wire (see ../shared/hive-protocol-v1.md): get_task and submit_result.

Only this module speaks HTTP. Every answer is classified here into a small set of
outcomes, so the claim and submit loops never see a raw response.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import requests


@dataclass
class Task:
    id: Any  # echoed back with its JSON type unchanged
    task_type: str
    params: Any
    raw: dict


@dataclass
class ServerError(Exception):
    """The server could not be used this time; ``retry_after`` in seconds when it said so."""

    message: str
    retry_after: float | None = None
    permanent: bool = False  # a 4xx that retrying will not fix

    def __str__(self) -> str:
        return self.message


@dataclass
class MalformedTask(Exception):
    """A task answer we cannot run; has an id when the server gave one (then we fail it back)."""

    message: str
    task_id: Any = None
    has_id: bool = False

    def __str__(self) -> str:
        return self.message


NO_TASKS = "no_tasks"


def snippet(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text + ("..." if len(body) > limit else ""))


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class HiveClient:
    """One keep-alive session to the Hive server. Not thread-safe: one per thread."""

    def __init__(self, server_url: str, worker_id: str, version: str,
                 get_timeout: float = 20.0, submit_timeout: float = 60.0) -> None:
        self.base = server_url.rstrip("/")
        self.get_timeout = get_timeout
        self.submit_timeout = submit_timeout
        self.session = requests.Session()
        # Proxy settings are read once here instead of from the environment on every request
        # (requests' per-request lookup costs ~20% of a no-op GET's CPU on this path).
        self.session.proxies.update(requests.utils.get_environ_proxies(self.base))
        self.session.trust_env = False
        self.session.headers.update({
            "X-Worker-ID": worker_id,
            "X-Worker-Version": version,
            "User-Agent": f"hive-worker/{version}",
        })

    def close(self) -> None:
        self.session.close()

    def _request(self, method: str, endpoint: str, timeout: float, data: bytes | None = None) -> requests.Response:
        url = f"{self.base}/{endpoint}"
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            resp = self.session.request(method, url, data=data, headers=headers, timeout=timeout)
        except requests.Timeout:
            raise ServerError(f"{endpoint}: no answer within {timeout:g} s") from None
        except requests.RequestException as exc:
            raise ServerError(f"{endpoint}: {type(exc).__name__}: {_short(exc)}") from None
        if not 200 <= resp.status_code < 300:
            permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
            raise ServerError(f"{endpoint}: HTTP {resp.status_code} {snippet(resp.content)}",
                              retry_after=_retry_after(resp), permanent=permanent)
        return resp

    def get_task(self) -> Task | str:
        """A Task, or NO_TASKS. Raises ServerError or MalformedTask."""
        resp = self._request("GET", "get_task", self.get_timeout)
        try:
            body = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise ServerError(f"get_task: answer is not JSON: {snippet(resp.content)}") from None
        if not isinstance(body, dict):
            raise ServerError(f"get_task: answer is not a JSON object: {snippet(resp.content)}")
        if body.get("status") == NO_TASKS and "id" not in body:
            return NO_TASKS
        if "id" not in body or body["id"] is None:
            raise MalformedTask(f"get_task: task without an id: {snippet(resp.content)}")
        task_type = body.get("task_type")
        if not isinstance(task_type, str) or not task_type:
            raise MalformedTask(f"get_task: task {body['id']!r} has no task_type: {snippet(resp.content)}",
                                task_id=body["id"], has_id=True)
        return Task(id=body["id"], task_type=task_type, params=body.get("params", {}), raw=body)

    def submit(self, body: bytes) -> None:
        """POST one result body (already JSON). Raises ServerError."""
        self._request("POST", "submit_result", self.submit_timeout, data=body)


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200]


def result_body(task_id: Any, worker_id: str, ok: bool, raw_result: bytes) -> bytes:
    """The submit_result body exactly as the 1.0.x worker posts it; raw_result is JSON bytes."""
    return orjson.dumps({
        "task_id": task_id,
        "worker_id": worker_id,
        "status": "success" if ok else "failure",
        "result": orjson.Fragment(raw_result),
    })
