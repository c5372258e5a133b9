"""The flush thread: makes the journal durable in batches, off every task's path.

fsync costs 1-2.5 ms here, and it used to sit on the path of every task: the claim thread
synced the journal before dispatching, the submit thread synced each result before
POSTing it. Neither has to wait for the disk. A process crash loses nothing that write()
handed to the OS; only a power cut (or a kernel crash) needs the flush, and the journal
keeps claim, result and completion in one append-only file, so one fdatasync makes a
whole batch durable in the right order. This thread flushes as soon as something was
written, then at most every FLUSH_INTERVAL while writes keep coming.

What a power cut can lose is only the last batch (~10 ms, FLUSH_INTERVAL): a claim not yet on disk is
not reported "interrupted" (the server's requeue is its only way back, as for a task lost
inside the HTTP answer); a result not yet on disk is reported "interrupted" instead;
a lost completion record makes a delivered result go out once more (at-least-once, as
documented).
"""

from __future__ import annotations

import logging
import threading

from supervisor.store.journal import Journal

log = logging.getLogger("hive.flush")

RETRY_AFTER_ERROR = 1.0
# After a flush the thread waits this long before the next (group commit): under load one
# fdatasync then covers several tasks, and the thread takes the GIL at most 100 times a second.
# Measured (pool 2, no-op drain): +18% tasks/s and -0.4 ms supervisor CPU per task against
# flushing after every append; it widens a power cut's window by these 10 ms.
FLUSH_INTERVAL = 0.01
# Also when nothing is written: sync() notices a journal file deleted under a running task,
# which no later append may come to reveal before a crash.
CHECK_EVERY = 5.0


class Flusher(threading.Thread):
    def __init__(self, journal: Journal) -> None:
        super().__init__(name="flush", daemon=True)
        self.journal = journal
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def kick(self) -> None:
        """Something was appended to the journal."""
        self.wake.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(CHECK_EVERY)
            self.wake.clear()
            try:
                self.journal.sync()
                self.stopping.wait(FLUSH_INTERVAL)
            except OSError as exc:  # e.g. a failing disk: say it, try again
                log.error("cannot flush the journal to disk: %s; retrying in %.0f s", exc, RETRY_AFTER_ERROR)
                self.stopping.wait(RETRY_AFTER_ERROR)
                self.wake.set()

    def stop(self) -> None:
        """Stop the thread after its current flush, then flush what is left."""
        self.stopping.set()
        self.wake.set()
        if self.is_alive():
            self.join(timeout=10.0)
        self.journal.sync()
