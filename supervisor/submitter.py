"""The submit loop (its own thread): write results to the outbox, then POST them, oldest first.

A result is in the outbox before its first POST and leaves it only after a 2xx. The
first POST goes out from memory right after the write, while the flush thread
(flusher.py) takes the file to the disk. Transient trouble (connection, timeout,
5xx, 408, 429) backs off and retries forever; a permanent 4xx is retried a few
times, then dead-lettered.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

import orjson

from supervisor.backoff import Backoff
from supervisor.client import HiveClient, ServerError
from supervisor.flusher import Flusher
from supervisor.outbox import Journal, Outbox

log = logging.getLogger("hive.submit")

PERMANENT_TRIES = 3


class SubmitLoop(threading.Thread):
    def __init__(self, client: HiveClient, outbox: Outbox, journal: Journal, flusher: Flusher, backoff: Backoff,
                 status: Any) -> None:
        super().__init__(name="submit", daemon=True)
        self.client = client
        self.outbox = outbox
        self.journal = journal
        self.flusher = flusher
        self.backoff = backoff
        self.status = status
        self.incoming: queue.SimpleQueue[tuple[str, bytes, Any]] = queue.SimpleQueue()
        self.fresh: dict[str, tuple[bytes, Any]] = {}  # key -> (body, task id) until its first POST
        self.unwritten: list[tuple[str, bytes, Any]] = []  # handed over, not yet written (the write failed)
        self.persist_lock = threading.Lock()
        self.refusals: dict[str, int] = {}
        self.closing = threading.Event()

    def hand_over(self, key: str, body: bytes, task_id: Any) -> None:
        """Called by the arbiter with a finished task's result body."""
        self.incoming.put((key, body, task_id))

    def persist(self, durable: bool = False) -> int:
        """Write every handed-over result to the outbox; with durable=True also flush them to the
        disk before returning (the arbiter's shutdown and self-update)."""
        count = 0
        with self.persist_lock:
            items, self.unwritten = self.unwritten, []
            while True:
                try:
                    items.append(self.incoming.get_nowait())
                except queue.Empty:
                    break
            for i, (key, body, task_id) in enumerate(items):
                try:
                    self.outbox.put(key, body, durable=False)
                except BaseException:
                    self.unwritten = items[i:]  # kept in memory and written at the next call (e.g. disk full)
                    raise
                self.flusher.result_written(key)
                self.fresh[key] = (body, task_id)
                count += 1
        if durable:
            self.flusher.flush()
        return count

    def run(self) -> None:
        try:
            while True:
                try:
                    self.persist()
                    if self.closing.is_set() and not len(self.outbox):
                        return
                    wait = self.backoff.remaining()
                    if wait > 0:
                        self._idle(min(wait, 0.5))
                        continue
                    paths = self.outbox.pending()
                    if not paths:
                        self._idle(0.5)
                        continue
                    self.post(paths[0])
                except Exception:  # noqa: BLE001 - e.g. a full disk: say it, wait, go on; results stay queued
                    log.exception("submitting failed unexpectedly; retrying in 5 s")
                    self.closing.wait(5.0)
        finally:
            self.client.close()

    def _idle(self, timeout: float) -> None:
        try:
            item = self.incoming.get(timeout=timeout)
        except queue.Empty:
            return
        self.incoming.put(item)  # persisted at the top of the loop, in order with the rest

    def post(self, path: Path) -> None:
        key = path.name[:-len(".json")]
        fresh = self.fresh.pop(key, None)  # later tries read the file: memory holds only what is new
        if fresh is not None:
            body, task_id = fresh
        else:
            body = self.outbox.read(path)
            if body is None:
                return
            task_id = orjson.loads(body).get("task_id")
        try:
            self.client.submit(body)
        except ServerError as exc:
            self.status.server_error(str(exc))
            if exc.permanent:
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
            log.warning("cannot post result for task %r: %s; %d result(s) wait on disk; next try in %.1f s",
                        task_id, exc, len(self.outbox), delay)
            return
        self.outbox.delivered(path)
        self.journal.clear(key)  # the server has it: done, whether or not the file was flushed yet
        self.refusals.pop(path.name, None)
        self.backoff.success()
        self.status.server_ok()
        self.status.delivered += 1
        log.info("result for task %r posted", task_id)
