"""The updater scripts: shipped once, as data files, and read when used (written out fresh each time).

``updater.bat`` and ``updater.sh`` live at the repo root, the one copy of each. release/build.py
puts both at the root of the bundle (PyInstaller ``--add-data``): a frozen worker reads them
there (``sys._MEIPASS``), a worker from source reads the repo root. A 1.0.x worker installs only
``worker.exe`` from a release zip, so everything the update needs must be inside the exe: the
bundle is. The release zip also takes ``updater.bat`` from the repo root. A build without them
(the plain ``pyinstaller`` command) refuses every update with one line (``missing``). Both
scripts take the same arguments, take the same steps and write the same log lines
(docs/self-update.md):

    updater.bat update EXE STAGED OLD UPDATE_DIR LOG HEALTH_SECONDS PID [PID2]
    sh updater.sh update EXE STAGED OLD UPDATE_DIR LOG HEALTH_SECONDS PID [PID2]

1. wait (bounded) until the old worker's exact PIDs have exited; stop them by PID if not;
2. keep EXE as OLD: a hard link (EXE never goes missing), else a rename;
3. check that STAGED still has the SHA-256 the worker verified (the environment variable
   UPDATER_STAGED_SHA256; certutil / sha256sum), else delete it and give up; then move STAGED
   onto EXE (retried: antivirus locks), checking every step;
4. start EXE with PYINSTALLER_RESET_ENVIRONMENT=1;
5. wait for UPDATE_DIR/decided, the directory the new worker makes once it is healthy;
6. if it does not come in time or the new worker dies: make UPDATE_DIR/decided itself (mkdir
   is atomic: whoever makes it decides), stop the new worker by PID, move OLD back onto EXE,
   write UPDATE_DIR/outcome.txt, start the old worker.

Every path ends with a worker started (or the old one still running); nothing is copied over
a live file; only the script's own files are deleted; no elevation, no VBS or PowerShell.
"""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.host.home import SOURCE_ROOT, bundle_dir
from supervisor.update.errors import UpdateRefused

BAT_NAME = "updater.bat"
SH_NAME = "updater.sh"
NAMES = (BAT_NAME, SH_NAME)  # what release/build.py bundles (both, on every platform)


def this_platform() -> str:
    """The name of the script this OS runs."""
    return BAT_NAME if os.name == "nt" else SH_NAME


def folder() -> Path:
    """Where the scripts are read from: the bundle's root when frozen, the repo root from source."""
    return bundle_dir() or SOURCE_ROOT


def missing() -> str | None:
    """The one line that refuses every update when this OS's script is not where it is read from."""
    name = this_platform()
    if (folder() / name).is_file():
        return None
    return f"self-update is off: this build does not carry {name} (a release is built by python -m release.build)"


def for_this_platform() -> tuple[str, bytes]:
    """(file name, bytes) of the script this OS runs; UpdateRefused when it is missing."""
    name = this_platform()
    try:
        return name, (folder() / name).read_bytes()
    except OSError:
        raise UpdateRefused(missing() or f"self-update is off: cannot read {folder() / name}") from None
