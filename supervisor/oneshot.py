"""One-off uses of a single real executor: ``--run TASK`` and ``--self-test``.

Both use the same Pool as the worker, so a local run has the same limits and
result conventions as production, and the self-test proves that this build can
start an executor and import every registered task.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from supervisor.model import Claim, Task
from supervisor.pool.pool import Pool, executor_init
from supervisor.settings import Settings
from supervisor.store.journal import new_key


def _one_slot_settings(settings: Settings) -> Settings:
    return replace(settings, pool_size=1, task_error_sleep=0.0, max_tasks_per_executor=0)


def _drive(pool: Pool, until: Callable[[], bool], timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    while not until():
        if deadline is not None and time.monotonic() > deadline:
            return False
        pool.serve(pool.settings.limit_check_interval)
        pool.check_limits()
        pool.maintain()
        if pool.slots[0].spawn_failures:
            return False
    return True


def run_local(settings: Settings, config_path: str | None, task_type: str, params: Any, registry: dict,
              version: str) -> int:
    """Run one task in a real executor; print the result as JSON. Exit 0 success, 1 failure."""
    if task_type not in registry:
        print(f"error: unknown task {task_type!r}; registered: {', '.join(sorted(registry))}", file=sys.stderr)
        return 1
    done: list[tuple[bool, bytes, str | None]] = []
    pool = Pool(1, executor_init(settings, config_path, version, debug=True), _one_slot_settings(settings),
                lambda c, ok, raw, kind, s: done.append((ok, raw, kind)))
    pool.start()
    try:
        if not _drive(pool, lambda: pool.ready_count(time.monotonic()) > 0, timeout=60):
            print("error: the executor did not start (see the log above)", file=sys.stderr)
            return 1
        pool.dispatch(Claim(new_key(), Task(id="local", task_type=task_type, params=params)))
        _drive(pool, lambda: bool(done), timeout=None)
    finally:
        pool.stop()
    ok, raw, kind = done[0]
    result = orjson.loads(raw)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if not ok:
        error = result.get("error") if isinstance(result, dict) else result
        print(f"failed, kind {kind}: {error}", file=sys.stderr)
        return 1
    return 0


def self_test(settings: Settings, config_path: str | None, registry: dict, version: str) -> int:
    """Start and stop one executor that imports every registered task. Exit 0 when all is well."""
    pool = Pool(1, executor_init(settings, config_path, version), _one_slot_settings(settings), lambda *a: None)
    pool.start()
    try:
        ok = _drive(pool, lambda: pool.ready_count(time.monotonic()) > 0, timeout=60)
    finally:
        pool.stop()
    if not ok:
        print(f"self-test FAILED: version {version}: an executor could not start or import the tasks",
              file=sys.stderr)
        return 1
    print(f"self-test ok: version {version}, tasks: {', '.join(sorted(registry))}")
    print(f"optional: {optional_modules()}")
    return 0


# Imported only when a task uses them, so a build may lack them (docs/release.md, docs/prom_pars.md).
OPTIONAL_MODULES = ("selenium",)  # prom_pars' browser backend and captcha hand-over


def optional_modules() -> str:
    """E.g. "selenium 4.51.0 bundled" or "selenium not bundled": what this build or venv carries."""
    import importlib
    import importlib.util

    parts = []
    for name in OPTIONAL_MODULES:
        if importlib.util.find_spec(name) is None:
            parts.append(f"{name} not bundled")
        else:
            version = getattr(importlib.import_module(name), "__version__", "?")
            parts.append(f"{name} {version} bundled")
    return ", ".join(parts)
