"""The submit loop (its own thread): record results in the journal, then POST them.

A result is in the journal before its first POST, which goes out from memory. One
that cannot be posted at once goes to the outbox (a file, written durably) and is
retried from there until a 2xx. Every result has its own schedule (backoff.py:
1, 2, 4 ... s up to an hour, jittered): the oldest result that is due goes first,
so one the server keeps refusing never delays the others. A failure that says the
server is away (no answer, 429, 502-504) also backs off claims and every other
result (the shared Backoff). No answer is final on its own (protocol v1 names
none, docs/settings.md): a result the server has refused for RESULT_RETRY_DAYS
becomes a dead letter, retried every window/28 while younger than four windows.
While the server is away, and at shutdown, whatever was not posted goes to the
outbox. When the disk takes no writes (diskguard.py), results wait in memory,
first in line, until they are posted or can be written; none is dropped.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.model import loads_standard
from supervisor.net.answers import raw_members
from supervisor.net.backoff import (
    DEAD_RETRY_SHARE,
    Backoff,
    dead_letters_to_retry,
    gives_up,
    jittered,
    result_delay,
    server_away,
)
from supervisor.net.client import HiveClient, ServerError
from supervisor.observe import liveness
from supervisor.store.diskguard import DiskGuard
from supervisor.store.flusher import Flusher
from supervisor.store.journal import Journal
from supervisor.store.outbox import Outbox

log = logging.getLogger("hive.submit")


def _logged_id(body: bytes) -> Any:
    """A result's task id for the log: a float may be orjson's reading of a huge integer, so its
    text is taken from the body as posted (read() checked the body is an object)."""
    task_id = loads_standard(body).get("task_id")
    if type(task_id) is float:
        task_id = raw_members(body.decode("utf-8")).get("task_id")
    return task_id


@dataclass
class Retry:
    """One result that failed: when to try it again and since when the server refuses it."""

    tries: int = 0
    due: float = 0.0  # monotonic
    refused_since: float | None = None  # wall time of the first refusal (an answer, not a network failure)
    error: str = ""


class SubmitLoop(threading.Thread):
    def __init__(self, client: HiveClient, outbox: Outbox, journal: Journal, flusher: Flusher, backoff: Backoff,
                 status: Any, disk: DiskGuard, retry_window: float = 7 * 86400.0,
                 rng: random.Random | None = None) -> None:
        super().__init__(name="submit", daemon=True)
        self.client = client
        self.outbox = outbox
        self.journal = journal
        self.flusher = flusher
        self.backoff = backoff
        self.status = status
        self.incoming: queue.SimpleQueue[tuple[str, bytes, Any]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        # Journalled, neither posted nor in the outbox yet: key -> (body, task id), oldest first.
        self.fresh: OrderedDict[str, tuple[bytes, Any]] = OrderedDict()
        self.retries: dict[str, Retry] = {}  # results that failed, by key (empty while all goes well)
        self.closing = threading.Event()
        self.disk = disk
        self.retry_window = retry_window  # seconds of refusals before a result becomes a dead letter
        self.rng = rng or random.Random()
        self.dead_every = max(retry_window / DEAD_RETRY_SHARE, 1.0)
        self.next_dead_retry = time.monotonic() + jittered(self.dead_every, self.rng)
        self.dead: tuple[int, str | None] = (0, None)
        self.dead = self._count_dead()  # dead letters and the newest reason

    def hand_over(self, key: str, body: bytes, task_id: Any) -> None:
        """Called by the arbiter with a finished task's result body."""
        self.incoming.put((key, body, task_id))

    def backlog_bytes(self) -> int:
        """Results waiting in memory, counted against OUTBOX_MAX_MB with the outbox."""
        with self.lock:
            return sum(len(body) for body, _ in self.fresh.values())

    def describe(self) -> dict[str, Any]:
        """How many results wait for a retry or as dead letters, and why (status.json, diagnostics)."""
        with self.lock:
            waiting = sorted(self.retries.values(), key=lambda r: r.due)
            refused = sum(1 for r in waiting if r.refused_since is not None)
        dead, dead_reason = self.dead
        return {"retrying": len(waiting), "refused": refused,
                "retrying_because": waiting[-1].error if waiting else None,
                "next_retry_in": round(max(0.0, waiting[0].due - time.monotonic()), 1) if waiting else None,
                "retry_window_days": round(self.retry_window / 86400, 6),
                "dead_letters": dead, "dead_letters_because": dead_reason}

    def _take_incoming(self) -> None:
        with self.lock:
            while True:
                try:
                    key, body, task_id = self.incoming.get_nowait()
                except queue.Empty:
                    break
                self.fresh[key] = (body, task_id)
                try:
                    self.journal.result(key, body)
                except OSError as exc:  # still posted from memory; only a crash before that would lose it
                    self.disk.failed(exc, f"the result of task {task_id!r} waits in memory")
        self.flusher.kick()

    def persist(self, force: bool = False) -> int:
        """Move every result not yet posted to the outbox, durably (server away, shutdown, self-update).
        What the disk does not take stays in memory, in order; while the disk is known to take no
        writes only ``force`` (the last try at shutdown) tries again."""
        self._take_incoming()
        count = 0
        with self.lock:
            while self.fresh and (force or not self.disk.broken):
                key, (body, task_id) = next(iter(self.fresh.items()))
                try:
                    self.outbox.put(key, body)
                except OSError as exc:
                    self.disk.failed(exc, f"{len(self.fresh)} result(s) wait in memory")
                    break
                self._clear(key)
                del self.fresh[key]
                count += 1
        return count

    def in_memory(self) -> int:
        """Results held only here (neither posted nor in the outbox)."""
        with self.lock:
            return len(self.fresh)

    def _clear(self, key: str) -> None:
        """The journal's completion record; a failure costs only a second POST after a crash."""
        try:
            self.journal.clear(key)
        except OSError as exc:
            self.disk.failed(exc, "a delivered result may be posted again after a restart")
        self.flusher.kick()

    def _keep(self, key: str, body: bytes, task_id: Any) -> Path | None:
        """A result whose POST did not go through: into the outbox, or, when the disk takes no
        writes, back into memory first in line. Its outbox path, or None."""
        if not self.disk.broken:
            try:
                path = self.outbox.put(key, body)
            except OSError as exc:
                self.disk.failed(exc, f"the result of task {task_id!r} waits in memory")
            else:
                self._clear(key)
                return path
        with self.lock:
            self.fresh[key] = (body, task_id)
            self.fresh.move_to_end(key, last=False)
        return None

    def _not_due(self, now: float) -> set[str]:
        """Keys of results waiting for their next try (empty, and free, while all goes well)."""
        if not self.retries:
            return set()
        with self.lock:
            return {key for key, r in self.retries.items() if r.due > now}

    def run(self) -> None:
        try:
            while True:
                liveness.beat(liveness.SUBMIT)
                try:
                    self._take_incoming()
                    if self.closing.is_set() and not len(self.outbox) and not self.fresh:
                        return
                    wait = self.backoff.remaining()
                    if wait > 0:
                        self.persist()  # the server is away: results wait in the outbox, not in memory
                        self._idle(min(wait, 0.5))
                        continue
                    now = time.monotonic()
                    not_due = self._not_due(now)
                    path = self.outbox.oldest(not_due)  # older than anything in memory: first
                    if path is not None:
                        self.post_file(path)
                        continue
                    item = self._next_fresh(not_due)
                    if item is not None:
                        self.post_fresh(*item)
                        continue
                    if now >= self.next_dead_retry and not self.closing.is_set():
                        self.retry_dead()
                        continue
                    self._idle(0.5)
                except Exception as exc:  # noqa: BLE001 - a bug, MemoryError: say it, wait, go on; results stay queued
                    delay = max(self.backoff.failure(), 1.0)
                    log.error("submitting failed unexpectedly (%s: %s); results stay queued, next try in %.1f s",
                              type(exc).__name__, exc, delay)
                    log.debug("submit failure", exc_info=True)
                    self.closing.wait(delay)
        finally:
            self.client.close()

    def _next_fresh(self, not_due: set[str]) -> tuple[str, bytes, Any] | None:
        """The oldest result in memory that is due, taken out of the queue."""
        with self.lock:
            for key in self.fresh:
                if key not in not_due:
                    body, task_id = self.fresh.pop(key)
                    return key, body, task_id
        return None

    def _idle(self, timeout: float) -> None:
        try:
            item = self.incoming.get(timeout=timeout)
        except queue.Empty:
            return
        self.incoming.put(item)  # taken at the top of the loop, in order with the rest

    def post_fresh(self, key: str, body: bytes, task_id: Any) -> None:
        try:
            self.client.submit(body)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the result is kept first
            path = self._keep(key, body, task_id)
            if not isinstance(exc, ServerError):
                raise
            self._failed(key, path, task_id, exc)
            return
        self._clear(key)
        self._posted(key, task_id)

    def post_file(self, path: Path) -> None:
        key = path.name[:-5]
        body = self.outbox.read(path)
        if body is None:  # gone or set aside as corrupt: nothing left to retry
            if self.retries:
                with self.lock:
                    self.retries.pop(key, None)
            return
        task_id = _logged_id(body)
        try:
            self.client.submit(body)
        except ServerError as exc:
            self._failed(key, path, task_id, exc)
            return
        self.outbox.delivered(path)
        self._posted(key, task_id)

    def _posted(self, key: str, task_id: Any) -> None:
        retried = None
        if self.retries:
            with self.lock:
                retried = self.retries.pop(key, None)
        self.backoff.success()
        self.status.server_ok()
        self.status.delivered += 1
        if retried is None:
            log.info("result for task %r posted", task_id)
        else:
            log.info("result for task %r posted after %d failed tr%s", task_id, retried.tries,
                     "y" if retried.tries == 1 else "ies")

    def _failed(self, key: str, path: Path | None, task_id: Any, exc: ServerError) -> None:
        """One result's POST failed: schedule its next try; a refusal older than the window makes it
        a dead letter (only a result on disk can be one)."""
        self.status.server_error(str(exc))
        with self.lock:
            retry = self.retries.setdefault(key, Retry())
        retry.tries += 1
        retry.error = str(exc)
        if not server_away(exc.status) and retry.refused_since is None:
            retry.refused_since = self.outbox.refused_since(path, time.time()) if path is not None else time.time()
        if path is not None and gives_up(exc.status, retry.refused_since, time.time(), self.retry_window):
            with self.lock:
                self.retries.pop(key, None)
            days = (time.time() - (retry.refused_since or 0)) / 86400
            self.outbox.dead_letter(path, f"{exc} (refused for {days:.3g} days, {retry.tries} tries in this run)")
            self.dead = self._count_dead()
            return
        delay = result_delay(retry.tries, self.rng)
        retry.due = time.monotonic() + delay
        away = ""
        if server_away(exc.status):
            away = f"; everything waits {self.backoff.failure(exc.retry_after):.1f} s (server away)"
        log.warning("cannot post result for task %r (try %d): %s; next try of it in %.1f s%s; %d result(s) wait "
                    "on disk%s", task_id, retry.tries, exc, delay, away, len(self.outbox),
                    f", {self.in_memory()} in memory" if self.disk.broken else "")

    # ---- dead letters: a slow retry until they are DEAD_MAX_AGE_WINDOWS windows old -------------

    def _count_dead(self) -> tuple[int, str | None]:
        try:
            letters = self.outbox.dead_letters()
        except OSError:
            return self.dead
        newest = max(letters, key=lambda entry: entry[2], default=None)
        return len(letters), self.outbox.dead_reason(newest[0]) if newest else None

    def retry_dead(self) -> None:
        """Post every dead letter within its budget once; stop at the first sign the server is away."""
        self.next_dead_retry = time.monotonic() + jittered(self.dead_every, self.rng)
        letters = self.outbox.dead_letters()
        chosen = dead_letters_to_retry(letters, time.time(), self.retry_window, self.outbox.max_bytes)
        delivered = refused = 0
        error = None
        for name in chosen:
            if self.closing.is_set():
                break
            try:
                body = (self.outbox.dead_dir / name).read_bytes()
                self.client.submit(body)
            except OSError as exc:
                error = f"{name}: {exc}"
                continue
            except ServerError as exc:
                error = str(exc)
                if server_away(exc.status):
                    break
                refused += 1
                continue
            self.outbox.dead_delivered(name)
            delivered += 1
            self.status.delivered += 1
        if chosen:
            self.dead = self._count_dead()
            log.log(logging.INFO if not refused and not error else logging.WARNING,
                    "dead letters: %d of %d retried were delivered, %d refused again%s; %d left in outbox-dead/, "
                    "next retry in ~%.0f s", delivered, len(chosen), refused,
                    f" (last error: {error})" if error else "", self.dead[0], self.dead_every)
