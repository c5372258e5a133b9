"""The flush thread: makes claims and results durable in the background, in the order recovery needs.

fsync costs 1-2.5 ms here per file, and it used to sit on the path of every task: the claim
thread synced the journal before dispatching, the submit thread synced each result before
POSTing it. Neither has to wait. A process crash loses nothing that write() handed to the OS,
so claims and results are written at once and only their flush to the disk (what a power cut
needs) happens here, batched, while the network threads go on. What recovery relies on is an
order, and this thread keeps it:

- a claim record reaches the disk before its completion record (one append-only file);
- a result file reaches the disk before the completion record of its claim: the record is
  appended only here, after the file's fsync (or by the submit thread once the server has the
  result, when the file no longer matters).

A power cut can therefore lose only what was written in the last flush (a few ms): a claim not
yet on disk is not reported "interrupted" (the server's requeue is its only way back, as for a
task lost inside the HTTP answer), and a delivered result whose completion record was lost is
reported once more as "interrupted" (at-least-once, as documented).
"""

from __future__ import annotations

import logging
import threading

from supervisor.outbox import Journal, Outbox

log = logging.getLogger("hive.flush")

RETRY_AFTER_ERROR = 1.0


class Flusher(threading.Thread):
    def __init__(self, journal: Journal, outbox: Outbox) -> None:
        super().__init__(name="flush", daemon=True)
        self.journal = journal
        self.outbox = outbox
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.flush_lock = threading.Lock()  # the thread and a final flush at shutdown never overlap
        self.lock = threading.Lock()
        self.written: list[str] = []  # keys of result files written but not yet flushed

    def claim_written(self) -> None:
        self.wake.set()

    def result_written(self, key: str) -> None:
        with self.lock:
            self.written.append(key)
        self.wake.set()

    def flush(self) -> None:
        """Everything written so far reaches the disk (also called directly at shutdown and before an update)."""
        with self.flush_lock:
            with self.lock:
                batch, self.written = self.written, []
            try:
                if batch:
                    self.outbox.flush(batch)
                    for key in batch:
                        self.journal.clear(key)
                self.journal.sync()
            except BaseException:
                with self.lock:
                    self.written[:0] = batch  # not durable yet: the next flush tries them again
                raise

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait()
            self.wake.clear()
            try:
                self.flush()
            except OSError as exc:  # e.g. a failing disk: say it, keep the batch, try again
                log.error("cannot flush claims and results to disk: %s; retrying in %.0f s", exc, RETRY_AFTER_ERROR)
                self.stopping.wait(RETRY_AFTER_ERROR)
                self.wake.set()

    def stop(self) -> None:
        """Stop the thread after its current flush, then flush what is left."""
        self.stopping.set()
        self.wake.set()
        if self.is_alive():
            self.join(timeout=10.0)
        self.flush()
