"""The dev server's queue as an ASGI application (wsgi.py's HiveApp), for uvicorn:

    DEVSERVER_DB=/tmp/q.sqlite uvicorn devserver.asgi:application

Every answer is sent without a Content-Length, in two parts: an ASGI server must then frame it
itself (uvicorn: Transfer-Encoding: chunked to an HTTP/1.1 client), so a worker meets chunked
answers here. The store is SQLite on the event loop's thread: fine for one worker under test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .wsgi import from_env

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def application(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    worker_id = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-worker-id"), None)
    code, payload, headers = from_env().respond(scope["method"], scope["path"], worker_id, body)
    await send({"type": "http.response.start", "status": code,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]})
    half = len(payload) // 2
    await send({"type": "http.response.body", "body": payload[:half], "more_body": True})
    await send({"type": "http.response.body", "body": payload[half:]})
