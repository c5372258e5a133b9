"""``main.py`` whose update coordinator takes the frozen build's path, from source (tests only).

From source an update_worker task is refused before any download ("needs the frozen build"). Run
as ``python frozen_update_path.py <main.py arguments>``: the worker is the real one (its executors,
claim and submit threads, log and status.json), except that an update task is drained, downloaded
and checked as a frozen build would. Only the coordinator's view changes: sys.frozen stays unset,
so executors start as from source and nothing could be installed over the interpreter.
"""

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from supervisor.update import coordinator

    coordinator.is_frozen = lambda: True
    sys.argv = [str(ROOT / "main.py"), *sys.argv[1:]]
    runpy.run_path(str(ROOT / "main.py"), run_name="__main__")
