"""Whether the home's disk takes writes, shared by the claim and submit loops and the arbiter.

A claimed task must be answered (protocol v1 has no requeue), so a journal or outbox
write that fails never drops anything: the task runs and its result waits in memory.
What a full disk must stop is claiming more. The first failed write says so in one
ERROR line; a small test write every PROBE_EVERY seconds decides when claiming resumes.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("hive.disk")

PROBE_EVERY = 5.0
PROBE_BYTES = 4096  # one page: on a full filesystem even a 1-byte file needs one


class DiskGuard:
    def __init__(self, *folders: Path, probe_every: float = PROBE_EVERY) -> None:
        self.probe_paths = [folder / "write-test.tmp" for folder in folders]  # every folder the worker writes to
        self.probe_every = probe_every
        self.lock = threading.Lock()
        self.problem: str | None = None  # why the last write failed, until a test write succeeds
        self.next_probe = 0.0

    @property
    def broken(self) -> bool:
        return self.problem is not None

    def failed(self, exc: OSError, consequence: str) -> None:
        """A write failed; ``consequence`` says what was done instead (e.g. "kept in memory")."""
        with self.lock:
            first = self.problem is None
            self.problem = f"{type(exc).__name__}: {exc}"
            self.next_probe = time.monotonic() + self.probe_every
        if first:
            what = "disk full" if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) else \
                "disk not writable"
            log.error("%s: not claiming (%s); %s; claiming resumes when a test write succeeds (every %.0f s)",
                      what, self.problem, consequence, self.probe_every)
        else:
            log.warning("disk still not writable (%s): %s", self.problem, consequence)

    def writable(self) -> bool:
        """True unless a write failed and no test write has succeeded since (probed at most every
        ``probe_every`` seconds; cheap to call every loop turn)."""
        if self.problem is None:
            return True
        now = time.monotonic()
        if now < self.next_probe:
            return False
        self.next_probe = now + self.probe_every
        for path in self.probe_paths:
            try:
                _test_write(path)
            except OSError as exc:
                log.debug("test write to %s still fails: %s", path.parent, exc)
                return False
        with self.lock:
            self.problem = None
        log.info("disk writable again (test write succeeded): claiming resumes")
        return True


def _test_write(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
        try:
            if os.write(fd, b"\0" * PROBE_BYTES) != PROBE_BYTES:
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)  # closed before the unlink: Windows cannot delete an open file
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
