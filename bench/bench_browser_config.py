"""Worker config for bench/bench_browser.py: bench_config.py plus the task bench_chrome (use with --config)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_browser  # noqa: E402
from bench_config import *  # noqa: E402,F403
from bench_config import TASK_REGISTRY as _BASE  # noqa: E402

TASK_REGISTRY = dict(_BASE, bench_chrome=bench_browser.chrome_tree)
