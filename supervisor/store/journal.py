"""The claim journal (journal/claims.jsonl), a write-ahead log: a claim is appended before
the task is dispatched, its result before the first POST, a completion record after the
server's 2xx. One append each, made durable in batches by the flush thread (flusher.py),
so no fsync sits on a task's path. recovery.py reads what a crash left in it.
"""


from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from supervisor.model import loads_standard
from supervisor.store.atomic import atomic_write, open_healing

log = logging.getLogger("hive.outbox")

_counter = itertools.count()


def new_key() -> str:
    """A claim key, unique in this home and ordered by claim time."""
    return f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}"


def _datasync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


class Journal:
    """The write-ahead log: claims, results and completions, appended to one file.

    Everything about one task lives in one append-only file, so the order recovery relies
    on (claim, then result, then completion) is the order of the file, and one fdatasync
    makes a whole batch durable. A file per claim or per result cost an fsync, a directory
    fsync and an unlink each (~3-5 ms here) and ten syscalls, each one a GIL hand-over
    between the supervisor's threads.
    """

    FILE = "claims.jsonl"
    COMPACT_BYTES = 4 * 1024 * 1024

    def __init__(self, home: Path) -> None:
        self.dir = home / "journal"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / self.FILE
        self.lock = threading.Lock()
        self.open_claims: dict[str, dict[str, Any]] = {}
        self.open_results: dict[str, bytes] = {}  # recorded, not yet posted nor in the outbox
        self.dirty = False
        self.torn = False  # the last append was cut short (disk full)
        self.compact_at = self.COMPACT_BYTES
        self.fd = self._open()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
        return open_healing(self.path, lambda path: os.open(path, flags, 0o644))

    def _append(self, record: dict[str, Any]) -> None:
        data = orjson.dumps(record) + b"\n"
        if self.torn:
            data = b"\n" + data  # ends a line a full disk cut short: recovery skips it, not this one
        written = os.write(self.fd, data)
        if written < len(data):
            self.torn = True
            raise OSError(errno.ENOSPC, f"short write to the journal ({written} of {len(data)} bytes)")
        self.torn = False
        self.dirty = True

    def record(self, key: str, task: dict[str, Any]) -> None:
        """A claim, before its task is dispatched."""
        with self.lock:
            self._append({"k": key, "task": task})
            self.open_claims[key] = task

    def result(self, key: str, body: bytes) -> None:
        """A result (the submit_result body, JSON bytes), before its first POST."""
        with self.lock:
            self._append({"k": key, "r": orjson.Fragment(body)})
            self.open_results[key] = body

    def clear(self, key: str) -> None:
        """Mark a claim done: its result reached the server or the outbox (a second call writes nothing)."""
        with self.lock:
            claimed = self.open_claims.pop(key, None)
            result = self.open_results.pop(key, None)
            if claimed is None and result is None:
                return
            self._append({"k": key, "done": True})
            if os.fstat(self.fd).st_size > self.compact_at:
                self._rewrite()

    def sync(self) -> None:
        """Make the appends durable; and if the file was deleted under us (journal/ tidied away
        on POSIX, where an open file can go), write it again from what is open, so a crash
        still finds every claim (appends to a deleted file would reach no disk anyone reads)."""
        with self.lock:
            if self.dirty:
                _datasync(self.fd)
                self.dirty = False
            if os.fstat(self.fd).st_nlink == 0:
                log.warning("journal: %s was deleted while the worker ran: written again with the %d open "
                            "claim(s) and %d result(s)", self.path, len(self.open_claims), len(self.open_results))
                self._rewrite()

    def leftovers(self) -> list[tuple[str, dict[str, Any] | None, bytes | None]]:
        """(key, claimed task, result body or None) of every claim not marked done, as left by a
        crash. A torn last line (a power cut mid-append, before its sync returned) is skipped."""
        claims: dict[str, tuple[dict[str, Any] | None, bytes | None]] = {}
        try:
            lines = self.path.read_bytes().splitlines()
        except OSError:
            lines = []
        for line in lines:
            body = _result_of(line)
            if body is not None:
                claims[body[0]] = (claims.get(body[0], (None, None))[0], body[1])
                continue
            try:
                rec = orjson.loads(line)
                key = rec["k"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if rec.get("done"):
                claims.pop(key, None)
            elif "r" in rec:
                claims[key] = (claims.get(key, (None, None))[0], orjson.dumps(rec["r"]))
            else:
                claims[key] = (rec.get("task"), None)
        return [(key, task, body) for key, (task, body) in sorted(claims.items())]

    def reset(self) -> None:
        """Start an empty log (after recovery)."""
        with self.lock:
            self.open_claims.clear()
            self.open_results.clear()
            self._rewrite()

    def _rewrite(self) -> None:
        """Compact: a new file with only what is still open, swapped in atomically."""
        data = b"".join(orjson.dumps({"k": k, "task": t}) + b"\n" for k, t in self.open_claims.items())
        data += b"".join(orjson.dumps({"k": k, "r": orjson.Fragment(b)}) + b"\n" for k, b in self.open_results.items())
        # Windows refuses to replace a file that any handle holds open, our own included:
        # close first. The old file stays whole until the replace, so a crash here loses nothing.
        os.close(self.fd)
        try:
            atomic_write(self.path, data)
        finally:
            self.fd = self._open()
        self.dirty = False
        # Big results in flight can keep the live part large: never rewrite again before it doubles.
        self.compact_at = max(self.COMPACT_BYTES, 2 * len(data))

    def close(self) -> None:
        with self.lock:
            _datasync(self.fd)
            os.close(self.fd)


def _result_of(line: bytes) -> tuple[str, bytes] | None:
    """(key, body) of a result line, the body byte for byte as it was written (a task id the
    server sent as a huge number or NaN stays exactly that); None for any other or a torn line."""
    if not line.startswith(b'{"k":') or not line.endswith(b"}"):
        return None
    sep = line.find(b',"r":')
    if sep < 0:
        return None
    body = line[sep + 5:-1]
    try:
        key = orjson.loads(line[5:sep])
        loads_standard(body)
    except (ValueError, RecursionError):
        return None
    return (key, body) if isinstance(key, str) else None
