"""Tasks used only by the benchmarks (registered through bench/bench_config.py, and by bench/celery_app.py).

Plain functions with the fleet's return convention, importable by name so that
multiprocessing, pebble and Celery workers run exactly the same code as ours.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time


def echo(**params):
    """No-op: the params come back as the result."""
    return {"status": "success", "data": params}


def echo_plain(params):
    """The same no-op for pools that call fn(arg): the dict comes back."""
    return params


def hash_work(rounds: int = 1000) -> dict:
    """CPU-bound: ``rounds`` sha256 over 4 KB (bench/bench_scaling.py calibrates rounds to ~50 ms)."""
    block = b"\x5a" * 4096
    digest = b""
    for _ in range(rounds):
        digest = hashlib.sha256(block + digest).digest()
    return {"status": "success", "data": digest.hex()}


def sleep(seconds: float = 1.0) -> dict:
    time.sleep(seconds)
    return {"status": "success", "data": seconds}


EAT = (
    "import time\n"
    "blocks = []\n"
    "while True:\n"
    "    blocks.append(b'\\x01' * ({step_mb} * 1024 * 1024))\n"
    "    time.sleep({pause})\n"
)


def eat_fast(step_mb: int = 8, pause: float = 0.005, where: str = "child", hold: float = 60.0) -> None:
    """Allocate (and touch) memory fast, in this process or in a child: the tree figure must trip."""
    code = EAT.format(step_mb=step_mb, pause=pause)
    if where == "self":
        exec(code)
    else:
        subprocess.run([sys.executable, "-c", code])
    time.sleep(hold)
