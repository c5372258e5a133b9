"""The dev server's queue as a WSGI application, so that real HTTP servers nobody on this project
wrote serve protocol v1 (tests/test_interop.py, docs/interop.md):

    DEVSERVER_DB=/tmp/q.sqlite gunicorn -w 2 devserver.wsgi:application
    DEVSERVER_DB=/tmp/q.sqlite waitress-serve devserver.wsgi:application
    DEVSERVER_DB=/tmp/q.sqlite uvicorn devserver.asgi:application          (asgi.py)

The API (under DEVSERVER_PREFIX, default /api) is handler.route's, over a Store on the SQLite
file DEVSERVER_DB: WAL and immediate transactions let any number of server processes share it,
each with its own connection (opened in the process that serves, after a fork). Protocol v1 has
no requeue, so neither has this app: a task is handed out once, and the tally shows what a
worker lost or doubled.

Two endpoints outside the prefix let a test drive the queue without opening the file (a
Windows worker under Wine against a Linux server cannot share SQLite's locks with it):

    POST /_devserver/enqueue   {"tasks": [{"task_type": "echo", "params": {...}, "id": "a1"}, ...]}
    GET  /_devserver/tally     {"tasks": [{"id", "handed_out", "results"}, ...], "results": <all POSTs>}
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from .handler import Response, json_response, route
from .store import Store

ADMIN = "/_devserver"
NO_REQUEUE = 10.0**9  # seconds: never, within any server's life


class HiveApp:
    """Protocol v1 plus the two test endpoints, over the SQLite queue at ``db_path``."""

    def __init__(self, db_path: str, prefix: str = "/api") -> None:
        self.db_path = db_path
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._pid = 0

    @property
    def store(self) -> Store:
        # One connection per process: a SQLite connection must not cross a fork (gunicorn's workers).
        with self._lock:
            if self._store is None or self._pid != os.getpid():
                self._store = Store(self.db_path, requeue_after=NO_REQUEUE)
                self._pid = os.getpid()
            return self._store

    def respond(self, method: str, path: str, worker_id: str | None, body: bytes) -> Response:
        if path == f"{ADMIN}/tally" and method == "GET":
            store = self.store
            return json_response(200, {"tasks": store.tally(), "results": store.counts()["results"]})
        if path == f"{ADMIN}/enqueue" and method == "POST":
            try:
                tasks = json.loads(body)["tasks"]
                ids = [self.store.enqueue(t["task_type"], t.get("params"), t.get("id")) for t in tasks]
            except (ValueError, KeyError, TypeError) as exc:
                return json_response(400, {"status": "error", "error": f"bad enqueue body: {exc!r}"})
            return json_response(200, {"status": "ok", "ids": ids})
        return route(self.store, self.prefix, method, path, worker_id, body)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        stream = environ["wsgi.input"]
        # A chunked request has no length; servers that decoded it say so with wsgi.input_terminated.
        body = stream.read(length) if length > 0 else stream.read() if environ.get("wsgi.input_terminated") else b""
        code, payload, headers = self.respond(environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/",
                                              environ.get("HTTP_X_WORKER_ID"), body)
        start_response(f"{code} {HTTPStatus(code).phrase}",
                       [*headers.items(), ("Content-Length", str(len(payload)))])
        return [payload]


_from_env: HiveApp | None = None


def from_env() -> HiveApp:
    """The app named by DEVSERVER_DB (required) and DEVSERVER_PREFIX, made once per process."""
    global _from_env
    if _from_env is None:
        db = os.environ.get("DEVSERVER_DB")
        if not db:
            raise RuntimeError("DEVSERVER_DB is not set: name the SQLite file of the queue to serve")
        _from_env = HiveApp(db, os.environ.get("DEVSERVER_PREFIX", "/api"))
    return _from_env


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI entry point for servers given a module path (gunicorn, waitress-serve, ...)."""
    return from_env()(environ, start_response)
