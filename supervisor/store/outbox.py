"""Results waiting to be posted: outbox/ holds one file per result, written durably, retried
oldest first until a 2xx.

Submission is therefore at-least-once: a result whose 2xx answer was lost is posted again,
and the server should treat a second result for the same task_id as a duplicate.
"""


from __future__ import annotations

import logging
import threading
from pathlib import Path

import orjson

from supervisor.store.atomic import atomic_write, replace

log = logging.getLogger("hive.outbox")


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
