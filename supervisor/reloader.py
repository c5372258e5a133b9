"""--dev: reload task code on save (watchdog), without ever cutting running work off.

One save is several file events (write, temp file + rename, editor swap files),
so events only mark the code dirty and a short quiet period (debounce) must pass.
Then the new code is imported in a fresh process first; if that fails the
traceback is shown once and the old executors keep serving. If it works, idle
executors are replaced at once and busy ones right after their task.

Stale bytecode: Python trusts a .pyc whose source has the same size and mtime
(1 s resolution on some file systems), so a same-size edit within a second
could run old code. Every reload therefore gets a fresh pycache_prefix: the new
executors compile from source and never read an old .pyc.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from supervisor.home import SOURCE_ROOT, is_frozen

log = logging.getLogger("hive.reload")

DEBOUNCE = 0.25  # seconds without events before a reload starts
CHECK_TIMEOUT = 60.0
CHANGE_EVENTS = {"created", "modified", "moved", "deleted", "closed"}

_CHECK = """
import json, sys
sys.path.insert(0, {root!r})
from executor.registry import load_config, registry_of
print(json.dumps(sorted(registry_of(load_config({config!r})))))
"""


class Reloader:
    def __init__(self, arbiter: Any, config_path: str | None) -> None:
        self.arbiter = arbiter
        self.config_path = config_path
        self.lock = threading.Lock()
        self.dirty_at: float | None = None
        self.checking = False
        self.outcome: tuple[bool, str, str] | None = None  # (ok, names json or traceback, prefix)
        self.pyc_root = Path(tempfile.mkdtemp(prefix="hive-dev-pyc-"))
        self.generation = 0
        self.watched = [SOURCE_ROOT / "tasks", SOURCE_ROOT / "config.py"]
        if config_path:
            # An alternative config usually sits beside its own task modules: watch that folder.
            self.watched.append(Path(config_path).resolve().parent)
        self.observer = None

    # Runs on watchdog's thread: it must never raise, or the observer thread dies.
    def on_event(self, event: Any) -> None:
        try:
            # Reads (opened, closed_no_write) come from our own import checks: only writes count.
            if getattr(event, "event_type", "") not in CHANGE_EVENTS:
                return
            paths = [getattr(event, "src_path", ""), getattr(event, "dest_path", "")]
            if any(str(p).endswith(".py") for p in paths if p) and not getattr(event, "is_directory", False):
                with self.lock:
                    self.dirty_at = time.monotonic()
        except Exception:  # noqa: BLE001
            pass

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        reloader = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                reloader.on_event(event)

        self.observer = Observer()
        seen = set()
        for path in self.watched:
            folder = path if path.is_dir() else path.parent
            if folder in seen:
                continue
            seen.add(folder)
            self.observer.schedule(Handler(), str(folder), recursive=path.is_dir())
        self.observer.daemon = True
        self.observer.start()
        self.arbiter.pool.init["pycache_prefix"] = str(self.pyc_root / "0")
        log.info("dev mode: watching %s for changes", ", ".join(str(p) for p in self.watched))

    def tick(self) -> None:
        """Called by the arbiter every loop turn."""
        if self.outcome is not None:
            ok, text, prefix = self.outcome
            self.outcome = None
            self.apply(ok, text, prefix)
        with self.lock:
            due = self.dirty_at is not None and time.monotonic() - self.dirty_at >= DEBOUNCE
            if not due or self.checking:
                return
            self.dirty_at = None
            self.checking = True
        self.generation += 1
        prefix = str(self.pyc_root / str(self.generation))
        threading.Thread(target=self.check, args=(prefix,), name="reload-check", daemon=True).start()

    def check(self, prefix: str) -> None:
        """Import the changed code in a fresh process (off the arbiter's thread)."""
        code = _CHECK.format(root=str(SOURCE_ROOT), config=self.config_path)
        try:
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=CHECK_TIMEOUT, cwd=str(SOURCE_ROOT),
                                  env=_env_with(PYTHONPYCACHEPREFIX=prefix))
            ok = proc.returncode == 0
            text = proc.stdout.strip().splitlines()[-1] if ok else proc.stderr.strip()
        except (OSError, subprocess.SubprocessError, IndexError) as exc:
            ok, text = False, f"{type(exc).__name__}: {exc}"
        self.outcome = (ok, text, prefix)
        with self.lock:
            self.checking = False
        self.arbiter.wake()

    def apply(self, ok: bool, text: str, prefix: str) -> None:
        if not ok:
            log.error("reload refused: the changed code does not import; old executors keep serving. "
                      "Fix and save again.\n%s", text)
            return
        names = set(json.loads(text))
        added = names - self.arbiter.registry_names
        removed = self.arbiter.registry_names - names
        self.arbiter.registry_names = names
        self.arbiter.pool.init["pycache_prefix"] = prefix
        self.arbiter.pool.retire_all("task code changed")
        extra = "".join([f"; new tasks: {', '.join(sorted(added))}" if added else "",
                         f"; removed tasks: {', '.join(sorted(removed))}" if removed else ""])
        log.info("reloading: code changed and imports cleanly; executors are replaced as they become idle%s", extra)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()


def _env_with(**extra: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(extra)
    return env


def attach(arbiter: Any, config_path: str | None) -> Reloader | None:
    if is_frozen():
        log.warning("--dev does nothing in the frozen build (there is no source to reload)")
        return None
    reloader = Reloader(arbiter, config_path)
    reloader.start()
    arbiter.hooks.append(reloader.tick)
    return reloader
