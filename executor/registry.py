"""Loading config.py (or an alternative given with --config) and its TASK_REGISTRY.

Both sides use it: executors to run tasks, the supervisor to know which task
types exist (the server may only name registered tasks).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CUSTOM_MODULE_NAME = "_hive_custom_config"


def load_config(path: str | None = None) -> ModuleType:
    """Import config.py, or the Python file at ``path`` (which may ``from config import *``)."""
    if not path:
        return importlib.import_module("config")
    file = Path(path).resolve()
    spec = importlib.util.spec_from_file_location(CUSTOM_MODULE_NAME, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load config from {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[CUSTOM_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def registry_of(module: ModuleType) -> dict:
    registry = getattr(module, "TASK_REGISTRY", None)
    if not isinstance(registry, dict):
        raise TypeError("config has no TASK_REGISTRY dict")
    bad = [name for name, fn in registry.items() if not isinstance(name, str) or not callable(fn)]
    if bad:
        raise TypeError(f"TASK_REGISTRY entries must map a name to a function: {bad!r}")
    return registry
