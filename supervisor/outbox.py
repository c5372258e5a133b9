"""Durable results (outbox) and claimed tasks (journal), so nothing the worker claims is lost.

Every claimed task is written to journal/ before it is dispatched. Its result is
written to outbox/ (atomically) before the first POST, then the journal entry is
removed; the outbox file goes only after the server answered 2xx. After a crash,
journal entries without a result become failures of kind "interrupted".

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
from supervisor.home import atomic_write

log = logging.getLogger("hive.outbox")

_counter = itertools.count()


def new_key() -> str:
    """A claim key, unique in this home and ordered by claim time."""
    return f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}"


class Journal:
    def __init__(self, home: Path) -> None:
        self.dir = home / "journal"
        self.dir.mkdir(parents=True, exist_ok=True)

    def record(self, key: str, task: dict[str, Any]) -> None:
        atomic_write(self.dir / f"{key}.json", orjson.dumps(task))

    def clear(self, key: str) -> None:
        try:
            (self.dir / f"{key}.json").unlink()
        except FileNotFoundError:
            pass

    def leftovers(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Claims left by a crash. A .tmp means the crash hit between write and rename:
        if its content is whole, that claim is recovered too (the server did hand it out)."""
        found = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                task = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                task = None
            found.append((path.stem, task))
        for tmp in sorted(self.dir.glob("*.json.tmp")):
            try:
                task = orjson.loads(tmp.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                task = None  # cut short before the fsync: nothing usable in it
            tmp.unlink(missing_ok=True)
            if isinstance(task, dict) and "id" in task:
                found.append((tmp.name[: -len(".json.tmp")], task))
        return found


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
        path = self.dir / f"{key}.json"
        atomic_write(path, body)
        with self.lock:
            self._sizes[path.name] = len(body)
        return path

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
    """Turn journal entries left by a crash into "interrupted" failures in the outbox."""
    have = outbox.keys()
    count = 0
    for key, task in journal.leftovers():
        if key not in have:
            if task is None or "id" not in task:
                log.error("journal: entry %s is unreadable; cannot report it", key)
                journal.clear(key)
                continue
            text = "the worker stopped (crash, kill or power cut) while this task ran"
            body = result_body(task["id"], worker_id, False, orjson.dumps(failure(text, "interrupted")))
            outbox.put(key, body)
            log.warning("task %s (%s) was interrupted by the last stop; reporting failure kind interrupted",
                        task["id"], task.get("task_type"))
            count += 1
        journal.clear(key)
    return count
