"""--dev: reload task code on save (watchdog), without ever cutting running work off.

One save is several file events (write, temp file + rename, editor swap files),
so events only mark the code dirty and a short quiet period (debounce) must pass.
Then the new code is imported in a fresh process first; if that fails the
traceback is shown once and the old executors keep serving. If it works, idle
executors are replaced at once and busy ones right after their task.

Stale bytecode: Python trusts a .pyc whose source has the same size and mtime
(1 s resolution on some file systems), so a same-size edit within a second
could run old code. Before each check, every changed file's .pyc is rewritten
as a checked-hash pyc (PEP 552): Python then validates it against the source's
hash on every import, whatever the mtime says. (A fresh pycache_prefix per
reload also works but recompiles the whole standard library: ~0.7 s a reload.)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import py_compile
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.safetext import loggable_block
from executor.registry import CUSTOM_MODULE_NAME
from supervisor.host.home import SOURCE_ROOT, is_frozen
from supervisor.host.logs import Block
from supervisor.settings import SPECS

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from supervisor.arbiter import Arbiter
    from supervisor.settings import Settings

log = logging.getLogger("hive.reload")

DEBOUNCE = 0.15  # seconds without events before a reload starts (one save's events come within ms)
CHECK_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0  # seconds the file watcher gets to stop when the worker does
CHANGE_EVENTS = {"created", "modified", "moved", "deleted", "closed"}
# A task author's failed task should cost seconds, not the fleet's 30 minutes: the fix is usually a save away.
DEV_TASK_ERROR_SLEEP = 5.0
LIMIT_KINDS = ("time_limit", "cpu_limit", "memory_limit")  # counted as "killed" in the session summary

_CHECK = """
import json, sys
sys.path.insert(0, {root!r})
from executor.registry import load_config, registry_of
module = load_config({config!r})
settings = {{name: getattr(module, name, None) for name in {names!r}}}
print(json.dumps({{"tasks": sorted(registry_of(module)), "settings": settings}}, default=repr))
"""


class Reloader:
    """A turn hook of the arbiter (Arbiter.add_turn_hook): watchdog's thread only marks the code
    dirty; the debounce, the import check's outcome and the reload run on the loop's thread."""

    def __init__(self, arbiter: Arbiter, config_path: str | None) -> None:
        self.arbiter = arbiter
        self.config_path = config_path
        self.lock = threading.Lock()
        self.dirty_at: float | None = None
        self.changed: set[str] = set()
        self.checking = False
        self.outcome: tuple[bool, str] | None = None  # (ok, names json or traceback)
        self.watched = [SOURCE_ROOT / "tasks", SOURCE_ROOT / "config.py"]
        if config_path:
            # An alternative config usually sits beside its own task modules: watch that folder.
            self.watched.append(Path(config_path).resolve().parent)
        self.observer: BaseObserver | None = None  # watchdog's, made in start()
        # config.py's settings as this worker read them at start: a reload reports the ones a save changed.
        module = sys.modules.get(CUSTOM_MODULE_NAME if config_path else "config")
        self.started_with = {spec.name: _canonical(getattr(module, spec.name, None)) for spec in SPECS} if module else {}

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
                    self.changed.update(str(p) for p in paths if p and str(p).endswith(".py"))
                self.arbiter.wake()  # the debounce is timed by the arbiter's loop: make it look
        except Exception:  # noqa: BLE001 - watchdog's observer thread dies on an exception: no more reloads
            log.debug("file event %r not handled", event, exc_info=True)

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        reloader = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                reloader.on_event(event)

        observer = self.observer = Observer()
        seen = set()
        for path in self.watched:
            folder = path if path.is_dir() else path.parent
            if folder in seen:
                continue
            seen.add(folder)
            observer.schedule(Handler(), str(folder), recursive=path.is_dir())
        observer.daemon = True
        observer.start()
        log.info("dev mode: watching %s for changes", ", ".join(str(p) for p in self.watched))

    def due_soon(self) -> bool:
        """A save is waiting out its debounce: the loop must look again within milliseconds."""
        return self.dirty_at is not None

    def on_turn(self) -> None:
        with self.lock:
            outcome, self.outcome = self.outcome, None
        if outcome is not None:
            self.apply(*outcome)
        with self.lock:
            due = self.dirty_at is not None and time.monotonic() - self.dirty_at >= DEBOUNCE
            if not due or self.checking:
                return
            self.dirty_at = None
            self.checking = True
            changed, self.changed = self.changed, set()
        log.debug("changed: %s; importing the new code in a fresh process", ", ".join(sorted(changed)))
        threading.Thread(target=self.check, args=(changed,), name="reload-check", daemon=True).start()

    def check(self, changed: set[str]) -> None:
        """Import the changed code in a fresh process (off the arbiter's thread)."""
        started = time.monotonic()
        try:
            for path in changed:
                _refresh_bytecode(path)
            code = _CHECK.format(root=str(SOURCE_ROOT), config=self.config_path, names=[s.name for s in SPECS])
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=CHECK_TIMEOUT, cwd=str(SOURCE_ROOT))
            ok = proc.returncode == 0
            text = proc.stdout.strip().splitlines()[-1] if ok else proc.stderr.strip()
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong, `checking` must end or reloads stop for good
            ok, text = False, f"{type(exc).__name__}: {exc}"
        log.debug("import check took %.0f ms", (time.monotonic() - started) * 1000)
        with self.lock:
            self.outcome = (ok, text)
            self.checking = False
        self.arbiter.wake()

    def apply(self, ok: bool, text: str) -> None:
        if not ok:
            # Kept on its lines, as a task's traceback is (pool.py): a one-line \n-escaped traceback is unreadable.
            log.error("reload refused: the changed code does not import; old executors keep serving. "
                      "Fix and save again.\n    %s", Block(loggable_block(text)))
            return
        found = json.loads(text)
        added, removed = self.arbiter.reload_tasks(set(found["tasks"]), "task code changed")
        extra = "".join([f"; new tasks: {', '.join(sorted(added))}" if added else "",
                         f"; removed tasks: {', '.join(sorted(removed))}" if removed else ""])
        log.info("reloading: code changed and imports cleanly; executors are replaced as they become idle%s", extra)
        changed = settings_changed(self.started_with, found["settings"])
        if changed:
            log.warning("config.py now sets %s differently from when this worker started: settings are read at start, "
                        "so restart the worker to apply them (the task code above is reloaded now)", ", ".join(changed))

    def on_stop(self) -> None:
        failed = dict(self.arbiter.health.kinds)
        killed = sum(failed.get(kind, 0) for kind in LIMIT_KINDS)
        log.info("dev session: %d task(s) succeeded, %d failed (%d killed over a limit)%s", self.arbiter.tasks_ok,
                 sum(failed.values()), killed,
                 f"; failures by kind: {', '.join(f'{k} {n}' for k, n in sorted(failed.items()))}" if failed else "")
        # Stopped and joined: on Windows watchdog's directory readers are non-daemon threads, and
        # left running they keep the process alive after "stopped" (seen under Wine).
        if self.observer is None:
            return
        self.observer.stop()
        self.observer.join(STOP_TIMEOUT)
        if self.observer.is_alive():
            log.warning("dev mode: the file watcher did not stop within %.0f s", STOP_TIMEOUT)
        else:
            log.debug("dev mode: stopped watching for changes")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def settings_changed(started_with: dict[str, str], now: dict[str, Any]) -> list[str]:
    """The config.py settings whose value differs from the one read at start (they need a restart)."""
    return [name for name, value in now.items() if name in started_with and _canonical(value) != started_with[name]]


def _refresh_bytecode(path: str) -> None:
    """Replace a changed file's .pyc by a checked-hash one, or remove it if the file does not compile."""
    cache = importlib.util.cache_from_source(path)
    try:
        py_compile.compile(path, cfile=cache, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    except (py_compile.PyCompileError, OSError):
        try:
            os.unlink(cache)
        except OSError:
            pass


def dev_settings(settings: Settings) -> Settings:
    """--dev's defaults: settings left at config.py's value that suit a fleet but not a desk.
    A value set in worker.toml, the environment or a flag is kept."""
    if settings.sources["task_error_sleep"] == "config.py" and settings.task_error_sleep > DEV_TASK_ERROR_SLEEP:
        settings = settings.overridden("--dev", task_error_sleep=DEV_TASK_ERROR_SLEEP)
    return settings


def attach(arbiter: Arbiter, config_path: str | None) -> Reloader | None:
    if is_frozen():
        log.warning("--dev does nothing in the frozen build (there is no source to reload)")
        return None
    reloader = Reloader(arbiter, config_path)
    reloader.start()
    arbiter.add_turn_hook(reloader)
    settings = arbiter.settings
    log.info("dev mode: tasks %s; pool of %d; log file %s", ", ".join(sorted(arbiter.registry_names)),
             settings.pool_size, settings.home / "logs" / "worker.log")
    for name in sorted(arbiter.registry_names):
        limits = settings.limits_for(name)
        log.info("dev mode: %s limits: time %s, cpu %s, memory %s", name, _limit(limits["time"], "s"),
                 _limit(limits["cpu"], "s"), _limit(limits["memory_mb"], "MB"))
    return reloader


def _limit(value: float, unit: str) -> str:
    return f"{value:g} {unit}" if value else "off"

