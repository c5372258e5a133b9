"""The worker's home folder: where it is, and the lock that keeps one worker per home (durable writes: store/atomic.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # supervisor/host/home.py -> the repo


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def bundle_dir() -> Path | None:
    """The frozen build's bundle folder (PyInstaller's sys._MEIPASS: the data files it carries,
    fleet.toml and the updater scripts), None from source."""
    bundle = getattr(sys, "_MEIPASS", None) if is_frozen() else None
    return Path(bundle) if bundle else None


def default_home() -> Path:
    """Beside the executable when frozen, beside main.py from source."""
    if is_frozen():
        return Path(sys.executable).resolve().parent
    return SOURCE_ROOT


HOME_ENV = "HIVE_WORKER_HOME"  # never Apache Hive's HIVE_HOME (supervisor/settings.py: environment_warnings)


class HomeError(ValueError):
    """The home cannot be used; the message is the one line shown to the operator."""


def resolve_home(flag: str | None, environ: Mapping[str, str] | None = None, write: bool = True) -> Path:
    """The home folder, made if missing; with ``write``, also checked writable (a probe file is made
    and removed) so an unusable home is one line at start, not a traceback later. Raises HomeError."""
    env = os.environ if environ is None else environ
    raw = flag or env.get(HOME_ENV) or None
    home = Path(raw).expanduser().resolve() if raw else default_home()
    try:
        if home.exists() and not home.is_dir():
            raise HomeError(f"cannot use {home} as the worker's home: it is a file, not a folder")
        if write:
            home.mkdir(parents=True, exist_ok=True)
            probe = home / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            try:
                probe.unlink()
            except OSError:
                pass  # written, so the home is usable (an antivirus may hold a new file for a moment)
    except OSError as exc:
        raise HomeError(f"cannot use {home} as the worker's home: {exc.strerror or exc}") from None
    return home


def lock_home(home: Path) -> BinaryIO | None:
    """Take home/worker.lock for the life of this process; None if another worker holds it.

    The OS releases it when the process ends, however it ends (a crash, a kill, a power cut),
    so a stale lock file never blocks a start. Executors do not inherit it.
    """
    f = open(home / "worker.lock", "a+b")  # held open on purpose: closing it releases the lock
    try:
        if sys.platform == "win32":  # (not os.name: mypy's per-platform passes read only sys.platform)
            import msvcrt

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f
