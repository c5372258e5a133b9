"""Whether the home's disk takes writes, shared by the claim and submit loops and the arbiter.

A claimed task must be answered (protocol v1 has no requeue), so a journal or outbox
write that fails never drops anything: the task runs and its result waits in memory.
What a disk that takes no writes must stop is claiming more. The first failed write says
so in one ERROR line, naming the error as it is: "disk full" only for ENOSPC and EDQUOT,
anything else by its errno name and text (a folder in the way, no permission...). A
small test write every PROBE_EVERY seconds (which makes a deleted folder again, as every
store write does) decides when claiming resumes.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

from supervisor.store.atomic import open_healing

log = logging.getLogger("hive.disk")

PROBE_EVERY = 5.0
PROBE_BYTES = 4096  # one page: on a full filesystem even a 1-byte file needs one
FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def describe(exc: OSError) -> str:
    """A failed write as it is: "disk full" only when it is, else the errno name and its text,
    e.g. "disk not writable: ENOTDIR: Not a directory: '/home/w/outbox/1.json.tmp'"."""
    what = "disk full" if exc.errno in FULL else "disk not writable"
    name = errno.errorcode.get(exc.errno, f"errno {exc.errno}") if exc.errno is not None else type(exc).__name__
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        text += f": {exc.filename!r}" if exc.filename2 is None else f": {exc.filename!r} -> {exc.filename2!r}"
    return f"{what}: {name}: {text}"


class DiskGuard:
    def __init__(self, *folders: Path, probe_every: float = PROBE_EVERY) -> None:
        self.probe_paths = [folder / "write-test.tmp" for folder in folders]  # every folder the worker writes to
        self.probe_every = probe_every
        self.lock = threading.Lock()
        self.problem: str | None = None  # why the last write failed (describe()), until a test write succeeds
        self.next_probe = 0.0

    @property
    def broken(self) -> bool:
        return self.problem is not None

    def failed(self, exc: OSError, consequence: str) -> None:
        """A write failed; ``consequence`` says what was done instead (e.g. "kept in memory")."""
        with self.lock:
            first = self.problem is None
            self.problem = describe(exc)
            self.next_probe = time.monotonic() + self.probe_every
        if first:
            log.error("%s; not claiming; %s; claiming resumes when a test write succeeds (every %.0f s)",
                      self.problem, consequence, self.probe_every)
        else:
            log.warning("still %s: %s", self.problem, consequence)

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
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        fd = open_healing(path, lambda p: os.open(p, flags, 0o644))  # a deleted folder is made again
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
