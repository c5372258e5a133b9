"""One dispatch measurement of another checkout, for bench_revisions.py (not part of run.py).

    python bench/rev_dispatch.py ROOT SMALL_TASKS BIG_TASKS

Run from ROOT's directory: the supervisor and executor imported are ROOT's, while the loop
that drives them (bench_dispatch.Ours, pool of 2, limits on) is this checkout's, so every
revision is measured by the same code. Prints one JSON object: tasks/s per payload, and the
file the Pool came from (so the caller can check that it was ROOT's).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    small_tasks, big_tasks = int(sys.argv[2]), int(sys.argv[3])
    from bench_dispatch import BIG, SMALL, Ours

    import common

    # common put this checkout first on sys.path; ROOT's packages must win, and this
    # checkout's must not fill in for a module ROOT lacks.
    sys.path[:] = [str(root)] + [p for p in sys.path if Path(p).resolve() != common.ROOT]
    logging.basicConfig(level=logging.WARNING)
    ours = Ours(config=root / "tests" / "support" / "test_config.py")
    try:
        ours.run(300, SMALL)  # warm-up, as bench_dispatch's sizing probe
        out = {"small": ours.run(small_tasks, SMALL), "10kb": ours.run(big_tasks, BIG),
               "pool_file": sys.modules[ours.api.Pool.__module__].__file__}
    finally:
        ours.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
