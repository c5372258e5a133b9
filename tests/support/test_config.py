"""config.py plus the misbehaving tasks of tests/support/fixture_tasks.py (used with --config)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixture_tasks as ft  # noqa: E402

from config import *  # noqa: E402,F403
from config import TASK_REGISTRY as _BASE  # noqa: E402

TASK_REGISTRY = dict(_BASE)
for _name in ("sleep_record", "echo", "plain", "returns_failure", "raises", "unserializable", "huge", "prints",
              "eat_memory", "spin", "cpu_children", "cpu_child_burner", "spawn_storm", "double_fork_daemon",
              "daemon_then_hang", "segfault", "write_pid_and_hang", "whereami"):
    TASK_REGISTRY[_name] = getattr(ft, _name)

# Lets a test break the registry import in executors only (the supervisor must stay up).
if os.environ.get("TEST_BROKEN_EXECUTOR_IMPORT") and __import__("multiprocessing").parent_process() is not None:
    raise ImportError("broken on purpose (TEST_BROKEN_EXECUTOR_IMPORT)")
