"""Worker config for the benchmarks: config.py plus the tasks of bench/bench_tasks.py (use with --config)."""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _here)
sys.path.insert(1, os.path.dirname(_here))

import bench_tasks  # noqa: E402

from config import *  # noqa: E402,F403
from config import TASK_REGISTRY as _BASE  # noqa: E402

TASK_REGISTRY = dict(_BASE, echo=bench_tasks.echo, bench_hash=bench_tasks.hash_work, bench_sleep=bench_tasks.sleep,
                     bench_eat=bench_tasks.eat_fast)
