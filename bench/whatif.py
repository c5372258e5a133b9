"""Run the real worker with one or more experimental patches applied in the supervisor only.

    python bench/whatif.py PATCH[,PATCH...] -- <main.py arguments>

Used by bench/bench_e2e.py to measure what each proposed change to the supervisor's
hot path would buy, without touching the core code. Patches (supervisor process only):

- ``nofsync``: journal and outbox writes without fsync (what batching fsyncs approaches);
- ``nojournal``: no journal file per claim (only the fsync'd outbox write remains);
- ``lazycpu``: no /proc scan at dispatch for the CPU baseline (taken from the first check instead);
- ``ratelimit``: limit checks at most every LIMIT_CHECK_INTERVAL, not on every loop turn;
- ``claimers2``: two claim threads (two GETs in flight when two executors are free);
- ``leanhttp``: HiveClient speaks HTTP/1.1 keep-alive through http.client instead of requests;
- ``switch``: sys.setswitchinterval(0.0005) (GIL hand-over between the supervisor's threads).

These are measurements of a direction, not reviewed implementations.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ("nofsync", "nojournal", "lazycpu", "ratelimit", "claimers2", "leanhttp", "switch")


def apply(patches: set[str]) -> Callable[[], None]:
    """Apply the patches; returns a function that undoes them (bench_dispatch uses them in-process)."""
    from supervisor import outbox, pool
    from supervisor.proctree import Usage

    saved: list[tuple[Any, str, Any]] = []

    def setattr_saved(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def undo() -> None:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
        saved.clear()

    if "nofsync" in patches:
        real = outbox.atomic_write

        def no_fsync(path, data, fsync=True):
            real(path, data, fsync=False)

        setattr_saved(outbox, "atomic_write", no_fsync)
    if "nojournal" in patches:
        setattr_saved(outbox.Journal, "record", lambda self, key, task: None)
    if "lazycpu" in patches:
        # Dispatch without a scan; the next limit check takes the CPU baseline from its own snapshot.
        # (The reviewed form: the executor reports its cumulative os.times() in its "done" frame.)
        real_snapshot = pool.Snapshot
        lazy = -1.0e18

        class NoScan:
            def usage(self, pid):
                return Usage(0, lazy, [])

        real_dispatch = pool.Pool.dispatch
        real_check = pool.Pool.check_limits

        def dispatch(self, claim):
            pool.Snapshot = NoScan
            try:
                return real_dispatch(self, claim)
            finally:
                pool.Snapshot = real_snapshot

        def check_limits(self):
            if not any(s.running for s in self.slots):
                return
            snap = real_snapshot()
            for s in self.slots:
                if s.running and s.executor is not None and s.running.cpu_base == lazy:
                    s.running.cpu_base = snap.usage(s.executor.pid).cpu
            pool.Snapshot = lambda: snap
            try:
                real_check(self)
            finally:
                pool.Snapshot = real_snapshot

        setattr_saved(pool.Pool, "dispatch", dispatch)
        setattr_saved(pool.Pool, "check_limits", check_limits)
    if "ratelimit" in patches:
        inner = pool.Pool.check_limits
        last = {"t": 0.0}

        def rate_limited(self):
            now = time.monotonic()
            if now - last["t"] >= self.settings.limit_check_interval:
                last["t"] = now
                inner(self)

        setattr_saved(pool.Pool, "check_limits", rate_limited)
    if "claimers2" in patches:
        from supervisor import arbiter as arbiter_mod

        real_run = arbiter_mod.Arbiter.run

        def run(self):
            extra = arbiter_mod.ClaimLoop(self._client(), self.gate, self.journal, self.backoff,
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
    if "switch" in patches:
        sys.setswitchinterval(0.0005)
    return undo


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
