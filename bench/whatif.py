"""Run the real worker with one or more experimental patches applied in the supervisor only.

    python bench/whatif.py PATCH[,PATCH...] -- <main.py arguments>

Used by bench/bench_e2e.py and bench/bench_limits.py to measure what a proposed change
to the supervisor would buy, without touching the core code. Patches (supervisor
process only; measurements of a direction, not reviewed implementations):

- ``leanhttp``: HiveClient speaks HTTP/1.1 keep-alive through http.client instead of requests;
- ``nofsync``: no fsync/fdatasync for the journal and the outbox (what durability costs);
- ``claimers2``: two claim threads (two GETs in flight when two executors are free);
- ``procwalk``: the limit monitor walks only the executors' trees in /proc, re-reading
  ``stat`` and ``task/*/children`` through file descriptors kept open (os.pread), instead
  of opening every process's ``stat`` on the machine for each check (Linux).

(Earlier patches ``lazycpu``, ``ratelimit`` and ``nojournal`` measured changes that are now
in the core: executor-reported CPU baseline, checks every LIMIT_CHECK_INTERVAL, an
append-only journal.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ("leanhttp", "nofsync", "claimers2", "procwalk")


def apply(patches: set[str]) -> Callable[[], None]:
    """Apply the patches; returns a function that undoes them."""
    saved: list[tuple[Any, str, Any]] = []

    def setattr_saved(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def undo() -> None:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
        saved.clear()

    if "nofsync" in patches:
        from supervisor import outbox

        real = outbox.atomic_write

        def no_fsync(path, data, *args, **kwargs):
            kwargs.pop("fsync", None)
            real(path, data, fsync=False)

        setattr_saved(outbox, "atomic_write", no_fsync)
        for name in ("_datasync", "fsync_dir"):
            if hasattr(outbox, name):
                setattr_saved(outbox, name, lambda *a, **k: None)
    if "claimers2" in patches:
        from supervisor import arbiter as arbiter_mod

        real_run = arbiter_mod.Arbiter.run

        def run(self):
            extra = arbiter_mod.ClaimLoop(self._client(), self.gate, self.journal, self.flusher, self.backoff,
                                          self.settings.no_task_sleep, self.stop_event, self.status)
            real_start = self.claimer.start

            def start_both():
                real_start()
                extra.start()

            self.claimer.start = start_both
            return real_run(self)

        setattr_saved(arbiter_mod.Arbiter, "run", run)
    if "leanhttp" in patches:
        from supervisor import client

        setattr_saved(client.HiveClient, "_request", _lean_request)
    if "procwalk" in patches:
        from supervisor import pool

        setattr_saved(pool, "Snapshot", TreeWalk)
    return undo


# ---- procwalk ------------------------------------------------------------------------------------------

class TreeWalk:
    """Stands in for proctree.Snapshot in the limit monitor: usage(root) of one executor's tree."""

    _fds: dict[str, int] = {}
    _tids: dict[int, tuple[int, list[str]]] = {}  # pid -> (num_threads when listed, tids)
    _page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    _tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0

    @classmethod
    def _read(cls, path: str, empty_ok: bool = False) -> bytes:
        fd = cls._fds.get(path)
        if fd is None:
            fd = cls._fds[path] = os.open(path, os.O_RDONLY)
        try:
            data = os.pread(fd, 4096, 0)
        except OSError:
            cls._drop(path)
            raise
        if not data and not empty_ok:  # the process is gone: reopen next time
            cls._drop(path)
            raise OSError("gone")
        return data

    @classmethod
    def _drop(cls, path: str) -> None:
        fd = cls._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def usage(self, root: int):
        from supervisor.proctree import Usage

        pids: list[int] = []
        rss, cpu = 0, 0.0
        stack = [root]
        while stack:
            pid = stack.pop()
            try:
                data = self._read(f"/proc/{pid}/stat")
            except OSError:
                continue
            fields = data[data.rfind(b")") + 2:].split()
            pids.append(pid)
            rss += int(fields[21]) * self._page
            cpu += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / self._tick
            threads = int(fields[17])
            known = self._tids.get(pid)
            if known is None or known[0] != threads:  # list the threads again only when their number changed
                try:
                    known = self._tids[pid] = (threads, os.listdir(f"/proc/{pid}/task"))
                except OSError:
                    continue
            for tid in known[1]:
                try:
                    stack.extend(int(c) for c in self._read(f"/proc/{pid}/task/{tid}/children", True).split())
                except (OSError, ValueError):
                    self._tids.pop(pid, None)  # a thread ended: list again next time
        return Usage(rss, cpu, pids)


# ---- leanhttp --------------------------------------------------------------------------------------------

class _Resp:
    def __init__(self, status: int, content: bytes, headers) -> None:
        self.status_code = status
        self.content = content
        self.headers = headers


def _lean_request(self, method, endpoint, timeout, data=None):
    """HiveClient._request over http.client (same outcomes: a response or ServerError)."""
    import http.client
    import socket
    from urllib.parse import urlsplit

    from supervisor import client

    conn = getattr(self, "_lean", None)
    if conn is None:
        parts = urlsplit(self.base)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = self._lean = cls(parts.hostname, parts.port, timeout=timeout)
        self._lean_path = parts.path.rstrip("/")
        self._lean_headers = {k: v for k, v in self.session.headers.items()
                              if k.lower().startswith(("x-", "user-agent"))}
    headers = dict(self._lean_headers)
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.request(method, f"{self._lean_path}/{endpoint}", body=data, headers=headers)
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        resp = conn.getresponse()
        body = resp.read()
    except TimeoutError:
        conn.close()
        raise client.ServerError(f"{endpoint}: no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise client.ServerError(f"{endpoint}: {type(exc).__name__}: {exc}") from None
    if resp.will_close:
        conn.close()
    if not 200 <= resp.status < 300:
        permanent = 400 <= resp.status < 500 and resp.status not in (408, 429)
        raise client.ServerError(f"{endpoint}: HTTP {resp.status} {client.snippet(body)}", permanent=permanent)
    return _Resp(resp.status, body, resp.headers)


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    cut = argv.index("--")
    patches = {p for p in ",".join(argv[:cut]).split(",") if p and p != "none"}
    unknown = patches - set(PATCHES)
    if unknown:
        print(f"unknown patch(es): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    sys.argv = [str(ROOT / "main.py"), *argv[cut + 1:]]
    import main as worker_main

    apply(patches)
    return worker_main.main(argv[cut + 1:])


if __name__ == "__main__":
    import multiprocessing

    multiprocessing.freeze_support()
    sys.exit(main())
