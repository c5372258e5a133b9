"""Run the real worker with one or more experimental patches applied in the supervisor only.

    python bench/whatif.py PATCH[,PATCH...] -- <main.py arguments>

Used by bench/bench_e2e.py to measure what a change to the supervisor would buy,
without touching the core code. Patches (supervisor process only; measurements of a
direction, not reviewed implementations):

- ``nofsync``: no fsync/fdatasync for the journal and the outbox (what durability costs);
- ``claimers2``: two claim threads (two GETs in flight when two executors are free).

(Earlier patches measured changes that are now in the core: ``lazycpu`` (executor-reported
CPU baseline), ``ratelimit`` (checks every LIMIT_CHECK_INTERVAL), ``nojournal`` (an
append-only journal), ``leanhttp`` (the protocol client on http.client) and ``procwalk``
(proctree.TreeMonitor).)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ("nofsync", "claimers2")


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
        from supervisor.store import atomic, journal, outbox
        real = atomic.atomic_write

        def no_fsync(path, data, *args, **kwargs):
            kwargs.pop("fsync", None)
            real(path, data, fsync=False)

        setattr_saved(outbox, "atomic_write", no_fsync)
        setattr_saved(journal, "_datasync", lambda fd: None)
    if "claimers2" in patches:
        from supervisor import arbiter as arbiter_mod

        real_run = arbiter_mod.Arbiter.run

        def run(self):
            extra = arbiter_mod.ClaimLoop(self._client(), self.gate, self.journal, self.flusher, self.backoff,
                                          self.settings.no_task_sleep, self.stop_event, self.status, self.disk)
            real_start = self.claimer.start

            def start_both():
                real_start()
                extra.start()

            self.claimer.start = start_both
            return real_run(self)

        setattr_saved(arbiter_mod.Arbiter, "run", run)
    return undo


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
