"""What the server saw: one small record per HTTP request, for tests that check headers and count polls."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


class Headers(dict[str, str]):
    """A plain dict keeping the client's spelling, whose lookups ignore case as HTTP does."""

    def _key(self, key: str) -> str:
        if not dict.__contains__(self, key):
            lower = key.lower()
            for k in self:
                if k.lower() == lower:
                    return k
        return key

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, self._key(key))

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, self._key(key) if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, self._key(key), default)

    @classmethod
    def of(cls, items: Iterable[tuple[str, str]]) -> Headers:
        out = cls()
        for name, value in items:
            # A repeated header is folded as RFC 9110 allows.
            existing = out.get(name)
            out[out._key(name) if existing is not None else name] = value if existing is None else f"{existing}, {value}"
        return out


@dataclass(frozen=True)
class RequestRecord:
    time: float  # time.monotonic() when the request line and body had been read
    method: str
    path: str  # without the query string
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    client: tuple[Any, ...] = ()  # (address, port): tells keep-alive connections apart


class RequestLog:
    """An append-only list shared by handler threads; iterating gives a snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RequestRecord] = []

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._items.append(record)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._items)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __getitem__(self, index: int) -> RequestRecord:
        with self._lock:
            return self._items[index]

    def count(self, path_suffix: str = "", method: str | None = None) -> int:
        """How many requests ended with `path_suffix` (and used `method`, if given)."""
        return sum(1 for r in self.snapshot() if r.path.endswith(path_suffix) and (method is None or r.method == method))
