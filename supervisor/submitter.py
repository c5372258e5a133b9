"""The submit loop (its own thread): persist results to the outbox, then POST them, oldest first.

A result is on disk before its first POST and leaves the disk only after a 2xx.
Transient trouble (connection, timeout, 5xx, 408, 429) backs off and retries
forever; a permanent 4xx is retried a few times, then dead-lettered.
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
from supervisor.outbox import Journal, Outbox

log = logging.getLogger("hive.submit")

PERMANENT_TRIES = 3


class SubmitLoop(threading.Thread):
    def __init__(self, client: HiveClient, outbox: Outbox, journal: Journal, backoff: Backoff,
                 status: Any) -> None:
        super().__init__(name="submit", daemon=True)
        self.client = client
        self.outbox = outbox
        self.journal = journal
        self.backoff = backoff
        self.status = status
        self.incoming: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self.persist_lock = threading.Lock()
        self.refusals: dict[str, int] = {}
        self.closing = threading.Event()

    def hand_over(self, key: str, body: bytes) -> None:
        """Called by the arbiter with a finished task's result body."""
        self.incoming.put((key, body))

    def persist(self) -> int:
        """Move every handed-over result to disk (also called by the arbiter at shutdown)."""
        # Group commit: every result waiting is written (one fsync each), then one directory
        # fsync makes the batch's renames durable, then the claims are marked done.
        batch: list[str] = []
        with self.persist_lock:
            while True:
                try:
                    key, body = self.incoming.get_nowait()
                except queue.Empty:
                    break
                self.outbox.put(key, body, sync_dir=False)
                batch.append(key)
            if batch:
                self.outbox.sync_dir()
                for key in batch:
                    self.journal.clear(key)
                self.journal.sync()
        return len(batch)

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
        self.refusals.pop(path.name, None)
        self.backoff.success()
        self.status.server_ok()
        self.status.delivered += 1
        log.info("result for task %r posted", task_id)
