"""Which tests start processes (issue 25's figure): ``HIVE_COUNT_SPAWNS=FILE python -m pytest``.

Counts every process a test starts, whatever starts it (subprocess, multiprocessing's spawn, a
worker that starts executors counts only once: its own start, as only this process is watched), by
wrapping the calls that create them: ``fork_exec``, ``posix_spawn`` and ``fork`` (Linux) or
``_winapi.CreateProcess`` (Windows). Writes ``{"tests": N, "starting_processes": M, "names": [...]}``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

_current: list[str] = []
_spawners: set[str] = set()
_seen: set[str] = set()


def _wrap(module: Any, name: str) -> None:
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        if _current:
            _spawners.add(_current[-1])
        return real(*args, **kwargs)

    setattr(module, name, counted)


def pytest_configure(config: pytest.Config) -> None:
    if sys.platform == "win32":
        import _winapi

        _wrap(_winapi, "CreateProcess")
    else:
        import _posixsubprocess
        import subprocess

        _wrap(_posixsubprocess, "fork_exec")  # multiprocessing's spawn
        _wrap(subprocess, "_fork_exec")  # subprocess keeps its own name for it
        for name in ("posix_spawn", "posix_spawnp", "fork"):
            _wrap(os, name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _current.append(item.nodeid)
    _seen.add(item.nodeid)
    try:
        return (yield)
    finally:
        _current.pop()


def pytest_unconfigure(config: pytest.Config) -> None:
    path = os.environ["HIVE_COUNT_SPAWNS"]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"tests": len(_seen), "starting_processes": len(_spawners), "names": sorted(_spawners)}, f, indent=1)
