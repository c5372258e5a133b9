"""The submit loop (its own thread): record results in the journal, then POST them, oldest first.

A result is in the journal before its first POST, which goes out from memory. One
that cannot be posted at once goes to the outbox (a file, written durably) and is
retried from there until a 2xx. Transient trouble (connection, timeout, 5xx, 408,
429) backs off and retries forever; a permanent 4xx is retried a few times, then
dead-lettered. While the server is away, and at shutdown, whatever was not posted
goes to the outbox. When the disk takes no writes (diskguard.py), results wait in
memory, first in line, until they are posted or can be written; none is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

from supervisor import liveness
from supervisor.net.backoff import Backoff
from supervisor.net.client import HiveClient, ServerError
from supervisor.store.diskguard import DiskGuard
from supervisor.store.flusher import Flusher
from supervisor.store.journal import Journal
from supervisor.store.outbox import Outbox

log = logging.getLogger("hive.submit")

PERMANENT_TRIES = 3


class SubmitLoop(threading.Thread):
    def __init__(self, client: HiveClient, outbox: Outbox, journal: Journal, flusher: Flusher, backoff: Backoff,
                 status: Any, disk: DiskGuard) -> None:
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
        self.refusals: dict[str, int] = {}
        self.closing = threading.Event()
        self.disk = disk

    def hand_over(self, key: str, body: bytes, task_id: Any) -> None:
        """Called by the arbiter with a finished task's result body."""
        self.incoming.put((key, body, task_id))

    def backlog_bytes(self) -> int:
        """Results waiting in memory, counted against OUTBOX_MAX_MB with the outbox."""
        with self.lock:
            return sum(len(body) for body, _ in self.fresh.values())

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
                    path = self.outbox.oldest()  # older than anything in memory: first
                    if path is not None:
                        self.post_file(path)
                        continue
                    with self.lock:
                        item = self.fresh.popitem(last=False) if self.fresh else None
                    if item is None:
                        self._idle(0.5)
                        continue
                    key, (body, task_id) = item
                    self.post_fresh(key, body, task_id)
                except Exception as exc:  # noqa: BLE001 - a bug, MemoryError: say it, wait, go on; results stay queued
                    delay = max(self.backoff.failure(), 1.0)
                    log.error("submitting failed unexpectedly (%s: %s); results stay queued, next try in %.1f s",
                              type(exc).__name__, exc, delay)
                    log.debug("submit failure", exc_info=True)
                    self.closing.wait(delay)
        finally:
            self.client.close()

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
            self._failed(path, task_id, exc)
            return
        self._clear(key)
        self._posted(task_id)

    def post_file(self, path: Path) -> None:
        body = self.outbox.read(path)
        if body is None:
            return
        task_id = orjson.loads(body).get("task_id")
        try:
            self.client.submit(body)
        except ServerError as exc:
            self._failed(path, task_id, exc)
            return
        self.outbox.delivered(path)
        self.refusals.pop(path.name, None)
        self._posted(task_id)

    def _posted(self, task_id: Any) -> None:
        self.backoff.success()
        self.status.server_ok()
        self.status.delivered += 1
        log.info("result for task %r posted", task_id)

    def _failed(self, path: Path | None, task_id: Any, exc: ServerError) -> None:
        self.status.server_error(str(exc))
        if exc.permanent and path is not None:  # only a result on disk can be dead-lettered
            tries = self.refusals.get(path.name, 0) + 1
            self.refusals[path.name] = tries
            if tries >= PERMANENT_TRIES:
                self.outbox.dead_letter(path, str(exc))
                self.refusals.pop(path.name, None)
                return
            log.warning("result for task %r refused (%s), try %d of %d", task_id, exc, tries, PERMANENT_TRIES)
            self.closing.wait(0.5)
            return
        delay = self.backoff.failure(exc.retry_after)
        log.warning("cannot post result for task %r: %s; %d result(s) wait on disk%s; next try in %.1f s",
                    task_id, exc, len(self.outbox), f", {self.in_memory()} in memory" if self.disk.broken else "",
                    delay)
