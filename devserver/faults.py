"""Injected misbehaviour: the ways a real server or the network in front of it lets a worker down."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

FaultHook = Callable[[str, str], "Fault | None"]


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or after) a normal answer. Build with the class methods."""

    kind: str
    code: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    stream: Callable[[threading.Event], Iterable[bytes]] | None = None

    @classmethod
    def status(cls, code: int, body: bytes | str = b"", headers: Mapping[str, str] | None = None) -> Fault:
        """Answer `code` with `body` and the request is not processed (nothing claimed, nothing recorded)."""
        return cls("status", code=code, body=_bytes(body), headers=dict(headers or {}))

    @classmethod
    def reset(cls) -> Fault:
        """Close the socket with an RST (SO_LINGER 0) without answering."""
        return cls("reset")

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Answer nothing for `seconds`, then close the connection."""
        return cls("hang", seconds=seconds)

    @classmethod
    def garbage(cls, body: bytes | str = b"this is not JSON") -> Fault:
        """HTTP 200 labelled application/json whose body is whatever is given (empty, HTML, a JSON list...)."""
        return cls("garbage", body=_bytes(body))

    @classmethod
    def raw(cls, stream: Callable[[threading.Event], Iterable[bytes]]) -> Fault:
        """Write whatever ``stream(stopping)`` yields to the socket as the whole answer, status line
        included (an endless chunked body, a trickle, a lying Content-Length), until it ends, the
        client goes away or the server stops (``stopping`` is set); then close the connection."""
        return cls("raw", stream=stream)

    @classmethod
    def lose_answer(cls) -> Fault:
        """Process the request for real (record the result, claim the task), then close without answering."""
        return cls("lose_answer")


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


class FaultQueue:
    """One-shot faults, each used by the first later request it matches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[Fault, str | None, str | None]] = []

    def add(self, faults: tuple[Fault, ...], path: str | None, method: str | None) -> None:
        with self._lock:
            self._pending.extend((f, path, method.upper() if method else None) for f in faults)

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for i, (fault, want_path, want_method) in enumerate(self._pending):
                if _matches(path, want_path) and (want_method is None or want_method == method):
                    del self._pending[i]
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


def _matches(path: str, want: str | None) -> bool:
    # Suffix match so "/submit_result", "submit_result" and "/api/submit_result" all work.
    return want is None or path == want or path.endswith(want if want.startswith("/") else "/" + want)

