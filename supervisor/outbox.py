"""Claimed tasks and their results, so nothing the worker claims is lost.

The journal (journal/claims.jsonl) is a write-ahead log: a claim is appended before
the task is dispatched, its result before the first POST, a completion record after
the server's 2xx. One append each, made durable in batches by the flush thread
(flusher.py), so no fsync sits on a task's path. A result that cannot be posted at
once goes to outbox/ (a file per result, written durably) and is retried from there,
oldest first, until a 2xx. After a crash, a result left in the journal is queued in
the outbox, and a claim without a result becomes a failure of kind "interrupted".

Submission is therefore at-least-once: a result whose 2xx answer was lost is
posted again, and the server should treat a second result for the same task_id
as a duplicate.
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

from executor.conventions import failure
from supervisor.client import result_body
from supervisor.home import atomic_write, replace

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
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)

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
        with self.lock:
            if self.dirty:
                _datasync(self.fd)
                self.dirty = False

    def leftovers(self) -> list[tuple[str, dict[str, Any] | None, bytes | None]]:
        """(key, claimed task, result body or None) of every claim not marked done, as left by a
        crash. A torn last line (a power cut mid-append, before its sync returned) is skipped."""
        claims: dict[str, tuple[dict[str, Any] | None, bytes | None]] = {}
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

    def put(self, key: str, body: bytes) -> Path:
        """Write one result durably (temp file, fsync, rename, directory fsync)."""
        path = self.dir / f"{key}.json"
        atomic_write(path, body)
        with self.lock:
            self._sizes[path.name] = len(body)
        return path

    def oldest(self) -> Path | None:
        """The result to post next (keys sort by claim time). min() over names, not a sorted list of
        Paths: during a drain hundreds wait, and building them all per POST cost 14% of the supervisor."""
        with self.lock:
            name = min(self._sizes, default=None)
        return None if name is None else self.dir / name

    def __len__(self) -> int:
        with self.lock:
            return len(self._sizes)

    def size(self) -> int:
        with self.lock:
            return sum(self._sizes.values())

    def full(self, extra: int = 0) -> bool:
        """At OUTBOX_MAX_MB, counting ``extra`` bytes of results not yet written here."""
        return self.size() + extra >= self.max_bytes

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
            replace(path, target_dir / path.name)
        except OSError as exc:
            log.error("outbox: cannot move %s aside: %s", path.name, exc)
        self._forget(path)

    def _forget(self, path: Path) -> None:
        with self.lock:
            self._sizes.pop(path.name, None)


def recover_interrupted(journal: Journal, outbox: Outbox, worker_id: str) -> int:
    """Queue results a crash left in the journal and turn claims without a result into
    "interrupted" failures, all in the outbox; then start a fresh journal."""
    have = outbox.keys()
    count = 0
    for key, task, body in journal.leftovers():
        if key in have:
            continue  # its result made it to the outbox before the crash
        if body is not None:
            outbox.put(key, body)
            log.info("result %s from the last run was not posted yet; queued in the outbox", key)
            continue
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
