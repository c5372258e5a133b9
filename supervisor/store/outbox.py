"""Results waiting to be posted: outbox/ holds one file per result, written durably, each retried
on its own schedule (submitter.py) until a 2xx.

A result the server has refused carries a ``<key>.refused`` file beside it holding the time of
the first refusal, so the retry window (RESULT_RETRY_DAYS) survives restarts. One refused for
the whole window moves to outbox-dead/ with a ``.reason.txt``; dead letters are retried on a
slow schedule and are never deleted by the worker.

Submission is therefore at-least-once: a result whose 2xx answer was lost is posted again,
and the server should treat a second result for the same task_id as a duplicate.
"""


from __future__ import annotations

import logging
import threading
from pathlib import Path

from supervisor.model import loads_standard
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
        self._marked: set[str] = set()  # results with a .refused file (none on the fast path)
        for mark in self.dir.glob("*.refused"):
            if mark.stem + ".json" not in self._sizes:
                mark.unlink(missing_ok=True)  # its result was delivered or moved just before a crash
            else:
                self._marked.add(mark.stem + ".json")

    def put(self, key: str, body: bytes) -> Path:
        """Write one result durably (temp file, fsync, rename, directory fsync)."""
        path = self.dir / f"{key}.json"
        atomic_write(path, body)
        with self.lock:
            self._sizes[path.name] = len(body)
        return path

    def oldest(self, skip: set[str] | None = None) -> Path | None:
        """The result to post next (keys sort by claim time), leaving out the keys in ``skip`` (results
        waiting for their next try). min() over names, not a sorted list of Paths: during a drain
        hundreds wait, and building them all per POST cost 14% of the supervisor."""
        with self.lock:
            if skip:
                name = min((n for n in self._sizes if n[:-5] not in skip), default=None)
            else:
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
            obj = loads_standard(body)  # a NaN or a huge number echoed in a task id is still JSON
            if not isinstance(obj, dict) or "task_id" not in obj or "status" not in obj:
                raise ValueError("not a result object")
            return body
        except FileNotFoundError:
            self._forget(path)
            return None
        except (OSError, ValueError, RecursionError) as exc:
            log.error("outbox: %s is corrupt (%s); moved to %s", path.name, exc, self.corrupt_dir)
            self._move(path, self.corrupt_dir)
            return None

    def delivered(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._forget(path)

    def refused_since(self, path: Path, now: float) -> float:
        """Wall time of the first refusal of the result at ``path``, recorded now if this is it. An
        unwritable record only costs the window restarting after a restart."""
        mark = path.with_suffix(".refused")
        try:
            return float(mark.read_text(encoding="ascii"))
        except (OSError, ValueError):
            pass
        try:
            atomic_write(mark, repr(now).encode("ascii"), fsync=False)
            with self.lock:
                self._marked.add(path.name)
        except OSError as exc:
            log.debug("outbox: cannot record the first refusal of %s: %s", path.name, exc)
        return now

    def dead_letter(self, path: Path, reason: str) -> None:
        log.error("outbox: %s moved to dead letters (outbox-dead/, retried slowly, never deleted): %s",
                  path.name, reason)
        self._move(path, self.dead_dir)
        atomic_write(self.dead_dir / (path.name + ".reason.txt"), reason.encode("utf-8"), fsync=False)

    def dead_letters(self) -> list[tuple[str, int, float]]:
        """(name, bytes, wall time it became a dead letter) of every dead letter, oldest name first."""
        out = []
        for p in self.dead_dir.glob("*.json"):
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((p.name, st.st_size, st.st_mtime))
        return sorted(out)

    def dead_reason(self, name: str) -> str:
        try:
            return (self.dead_dir / (name + ".reason.txt")).read_text(encoding="utf-8")
        except OSError:
            return "unknown"

    def dead_delivered(self, name: str) -> None:
        """A dead letter the server took after all: gone, with its reason."""
        (self.dead_dir / name).unlink(missing_ok=True)
        (self.dead_dir / (name + ".reason.txt")).unlink(missing_ok=True)

    def _move(self, path: Path, target_dir: Path) -> None:
        try:
            replace(path, target_dir / path.name)
        except OSError as exc:
            log.error("outbox: cannot move %s aside: %s", path.name, exc)
        self._forget(path)

    def _forget(self, path: Path) -> None:
        with self.lock:
            self._sizes.pop(path.name, None)
            if path.name not in self._marked:
                return
            self._marked.discard(path.name)
        try:
            path.with_suffix(".refused").unlink(missing_ok=True)
        except OSError as exc:  # left behind: removed at the next start
            log.debug("outbox: cannot remove the refusal record of %s: %s", path.name, exc)
