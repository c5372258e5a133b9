"""Durable results (outbox) and claimed tasks (journal), so nothing the worker claims is lost.

Every claimed task is appended to the journal before it is dispatched. Its result is
written to outbox/ (atomically: temp file + rename) before the first POST; the outbox
file goes only after the server answered 2xx. After a crash, journal entries without
a result become failures of kind "interrupted". Flushing both to the disk happens
off the task's path, in supervisor/flusher.py, which also keeps the order recovery needs.

Submission is therefore at-least-once: a result whose 2xx answer was lost is
posted again, and the server should treat a second result for the same task_id
as a duplicate.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from executor.conventions import failure
from supervisor.client import result_body
from supervisor.home import atomic_write, fsync_dir

log = logging.getLogger("hive.outbox")

_counter = itertools.count()


def new_key() -> str:
    """A claim key, unique in this home and ordered by claim time."""
    return f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}"


def _datasync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


class Journal:
    """Claimed tasks, as an append-only log (journal/claims.jsonl).

    One append per claim and one per completion (a file per claim cost a file fsync,
    a directory fsync and an unlink); sync() makes them durable in batches (the flush
    thread). A completion record whose result file did not reach the disk could hide a
    claim from recovery, so the flush thread appends it only after that file's fsync.
    """

    FILE = "claims.jsonl"
    COMPACT_BYTES = 4 * 1024 * 1024

    def __init__(self, home: Path) -> None:
        self.dir = home / "journal"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / self.FILE
        self.lock = threading.Lock()
        self.open_claims: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)

    def _append(self, record: dict[str, Any]) -> None:
        os.write(self.fd, orjson.dumps(record) + b"\n")
        self.dirty = True

    def record(self, key: str, task: dict[str, Any]) -> None:
        with self.lock:
            self._append({"k": key, "task": task})
            self.open_claims[key] = task

    def clear(self, key: str) -> None:
        """Mark a claim done (once: a second call for the same key writes nothing)."""
        with self.lock:
            if self.open_claims.pop(key, None) is None:
                return
            self._append({"k": key, "done": True})
            if not self.open_claims and os.fstat(self.fd).st_size > self.COMPACT_BYTES:
                self._rewrite({})

    def sync(self) -> None:
        with self.lock:
            if self.dirty:
                _datasync(self.fd)
                self.dirty = False

    def leftovers(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Claims without a completion record, as left by a crash. A torn last line (power cut
        mid-append, before its sync returned: that claim was never dispatched) is skipped."""
        claims: dict[str, dict[str, Any] | None] = {}
        try:
            lines = self.path.read_bytes().splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                rec = orjson.loads(line)
                key = rec["k"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if rec.get("done"):
                claims.pop(key, None)
            else:
                claims[key] = rec.get("task")
        return sorted(claims.items())

    def reset(self, keep: dict[str, dict[str, Any]] | None = None) -> None:
        """Start a fresh log (after recovery), keeping only ``keep``."""
        with self.lock:
            self._rewrite(keep or {})

    def _rewrite(self, keep: dict[str, dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps({"k": k, "task": t}) + b"\n" for k, t in keep.items())
        atomic_write(self.path, data)
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
        self.open_claims = dict(keep)
        self.dirty = False

    def close(self) -> None:
        with self.lock:
            _datasync(self.fd)
            os.close(self.fd)


class Outbox:
    def __init__(self, home: Path, max_bytes: int) -> None:
        self.dir = home / "outbox"
        self.dead_dir = home / "outbox-dead"
        self.corrupt_dir = home / "outbox-corrupt"
        for d in (self.dir, self.dead_dir, self.corrupt_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)  # a write cut short by a crash: the journal still has that task
        self._sizes = {p.name: p.stat().st_size for p in self.dir.glob("*.json")}
        for name in [n for n, size in self._sizes.items() if size == 0]:
            # Renamed but never flushed before a power cut: set aside now, so recovery
            # reports its claim as interrupted instead of trusting an empty file.
            log.error("outbox: %s is empty (a power cut before it reached the disk); moved to %s",
                      name, self.corrupt_dir)
            self._move(self.dir / name, self.corrupt_dir)

    def put(self, key: str, body: bytes, durable: bool = True) -> Path:
        """Write one result atomically; with durable=False it is not flushed to the disk (flush() does that)."""
        path = self.dir / f"{key}.json"
        atomic_write(path, body, fsync=durable)
        with self.lock:
            self._sizes[path.name] = len(body)
        return path

    def flush(self, keys: list[str]) -> None:
        """Flush the files of ``keys`` still here (delivered ones are gone), then their renames."""
        for key in keys:
            try:
                fd = os.open(self.dir / f"{key}.json", os.O_RDWR | getattr(os, "O_BINARY", 0))  # Windows flushes only writable handles
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(self.dir)

    def pending(self) -> list[Path]:
        with self.lock:
            names = sorted(self._sizes)
        return [self.dir / n for n in names]

    def __len__(self) -> int:
        with self.lock:
            return len(self._sizes)

    def size(self) -> int:
        with self.lock:
            return sum(self._sizes.values())

    def full(self) -> bool:
        return self.size() >= self.max_bytes

    def keys(self) -> set[str]:
        with self.lock:
            return {n[:-5] for n in self._sizes}

    def read(self, path: Path) -> bytes | None:
        """The body to POST, or None if the file is unusable (then it is set aside, never deleted)."""
        try:
            body = path.read_bytes()
            obj = orjson.loads(body)
            if not isinstance(obj, dict) or "task_id" not in obj or "status" not in obj:
                raise ValueError("not a result object")
            return body
        except FileNotFoundError:
            self._forget(path)
            return None
        except (OSError, ValueError) as exc:
            log.error("outbox: %s is corrupt (%s); moved to %s", path.name, exc, self.corrupt_dir)
            self._move(path, self.corrupt_dir)
            return None

    def delivered(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._forget(path)

    def dead_letter(self, path: Path, reason: str) -> None:
        log.error("outbox: %s moved to dead letters after permanent refusals: %s", path.name, reason)
        self._move(path, self.dead_dir)
        atomic_write(self.dead_dir / (path.name + ".reason.txt"), reason.encode("utf-8"), fsync=False)

    def _move(self, path: Path, target_dir: Path) -> None:
        try:
            os.replace(path, target_dir / path.name)
        except OSError as exc:
            log.error("outbox: cannot move %s aside: %s", path.name, exc)
        self._forget(path)

    def _forget(self, path: Path) -> None:
        with self.lock:
            self._sizes.pop(path.name, None)


def recover_interrupted(journal: Journal, outbox: Outbox, worker_id: str) -> int:
    """Turn claims left by a crash into "interrupted" failures in the outbox, then start a fresh journal."""
    have = outbox.keys()
    count = 0
    for key, task in journal.leftovers():
        if key in have:
            continue  # its result made it to the outbox before the crash
        if not isinstance(task, dict) or "id" not in task:
            log.error("journal: claim %s is unreadable; cannot report it", key)
            continue
        text = "the worker stopped (crash, kill or power cut) while this task ran"
        body = result_body(task["id"], worker_id, False, orjson.dumps(failure(text, "interrupted")))
        outbox.put(key, body)
        log.warning("task %s (%s) was interrupted by the last stop; reporting failure kind interrupted",
                    task["id"], task.get("task_type"))
        count += 1
    journal.reset()
    return count
