"""Frozen one-file build only: the supervisor dies with its bootloader (docs/release.md).

A one-file build runs as two processes: the bootloader (the PID Task Scheduler,
systemd or an updater sees; it unpacks the bundle into _MEI*) and its child, the
supervisor. SIGTERM and Ctrl+C are forwarded, but a hard kill of the bootloader
(SIGKILL, "End task", schtasks /End) would leave the supervisor running orphaned,
still claiming tasks. Called once by main.py after freeze_support() (executors and
the resource tracker never get there), this kills the supervisor the same hard
way when its bootloader is gone; its executors follow it (executor/sandbox.py,
Job Objects on Windows). It never raises: logging is not set up yet, so what it
decided is kept in ``OUTCOME`` and main.py logs it as one line.

It also remembers what the bootloader unpacked (``remember_unpacked``): a temp cleaner or an
antivirus may delete those files while the worker runs. The running processes keep what they
loaded, but every executor started after that fails (or, on Windows, may hang); the pool asks
``exit_if_unpacked_gone`` before it starts one and the worker exits with EXIT_UNPACKED_GONE, once, for whatever
restarts it (Task Scheduler, systemd, 1.0.x's watcher) to start it with a fresh unpack
(docs/release.md, "One file, two processes").
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

# (log level, line) of the decision, for main.py to log once logging is up; None from source.
OUTCOME: tuple[int, str] | None = None
# The exit status of a worker whose unpacked files are gone (documented in docs/release.md).
EXIT_UNPACKED_GONE = 6  # 5 is the probation's rollback (update/probation.py)
# (the _MEI folder, the names at its top level) as the bootloader left them; None from source.
UNPACKED: tuple[Path, list[str]] | None = None


class UnpackedFilesGone(SystemExit):
    """Raised on the supervision loop's thread: the loop's own handler lets it through, run()
    shuts down as for a stop (results persisted, executors stopped), and the process exits
    with EXIT_UNPACKED_GONE."""


def remember_unpacked() -> None:
    """Note the one-file bundle's top-level files (called once by main.py, like the tether)."""
    global UNPACKED
    if getattr(sys, "frozen", False) and _is_one_file():
        bundle = Path(sys._MEIPASS)  # type: ignore[attr-defined]
        try:
            UNPACKED = (bundle, sorted(os.listdir(bundle)))
        except OSError:
            UNPACKED = None


def missing_unpacked(bundle: Path, names: list[str]) -> str | None:
    """Why the unpacked bundle cannot start another process (its folder or files are gone), or None."""
    if not bundle.is_dir():
        return f"the folder it unpacked into, {bundle}, is gone"
    gone = [n for n in names if not (bundle / n).exists()]
    if not gone:
        return None
    return f"{len(gone)} of the {len(names)} files it unpacked into {bundle} are gone (e.g. {', '.join(gone[:3])})"


def exit_if_unpacked_gone() -> None:
    """Before an executor starts: if our unpacked files are gone, say so in one line and exit with
    EXIT_UNPACKED_GONE (raises UnpackedFilesGone), instead of failing every start."""
    if UNPACKED is None:
        return
    problem = missing_unpacked(*UNPACKED)
    if problem:
        logging.getLogger("hive.supervisor").error(
            "the one-file binary's unpacked files are gone (%s; a temp cleaner or an antivirus?): no executor can "
            "start; exiting with status %d so that whatever starts the worker starts it again with a fresh unpack",
            problem, EXIT_UNPACKED_GONE)
        raise UnpackedFilesGone(EXIT_UNPACKED_GONE)


def tether_to_bootloader() -> None:
    global OUTCOME
    if not getattr(sys, "frozen", False):
        return
    try:
        OUTCOME = _tether()
    except Exception as exc:  # noqa: BLE001 - never stop the worker from starting
        OUTCOME = (logging.WARNING, f"cannot tie the worker to its one-file bootloader ({exc!r}): "
                                    "a hard kill of the bootloader would leave this supervisor running")


def _is_one_file() -> bool:
    """One-file builds unpack to a fresh _MEI* folder (on Windows under %LOCALAPPDATA%\\HiveWorker,
    which may be the install folder itself); a onedir build's bundle is the executable's folder or
    its _internal. Decided from our own paths, so no look at the parent is needed."""
    bundle = Path(getattr(sys, "_MEIPASS", "")).resolve()
    exe_dir = Path(sys.executable).resolve().parent
    return bundle.name.startswith("_MEI") and bundle not in (exe_dir, exe_dir / "_internal")


def _tether() -> tuple[int, str]:
    if not _is_one_file():
        return logging.DEBUG, "onedir build: no bootloader to tie to"
    ppid = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0:
            if os.getppid() != ppid:  # the bootloader died before the kernel was told
                os.kill(os.getpid(), signal.SIGKILL)
            return logging.DEBUG, f"tied to the one-file bootloader (pid {ppid}) by PR_SET_PDEATHSIG"
    # The one-file bootloader always starts the program as its direct child, so the parent is it.
    # Its image is checked where the OS tells it (psutil's exe() fails under Wine; the Win32 call
    # does not); when it cannot be told, the tether stays: its only risk is a stop, never an orphan.
    image = image_of(ppid)
    if image is not None and os.path.normcase(image) != os.path.normcase(str(Path(sys.executable).resolve())):
        return logging.WARNING, (f"the parent process (pid {ppid}, {image!r}) is not this build's bootloader: "
                                 "not tied to it; a hard kill of the bootloader would leave this supervisor running")
    from common.treekill import watch_parent  # here: a source run never needs psutil this early

    # os._exit closes our handles: the executors' Job Objects kill them (POSIX: their own watch).
    watch_parent(ppid, lambda: os._exit(1), "bootloader-tether")
    how = "its process handle" if sys.platform == "win32" else "polling"
    seen = "" if image is not None else " (its image could not be read; tied anyway)"
    return logging.DEBUG if image is not None else logging.INFO, \
        f"tied to the one-file bootloader (pid {ppid}) through {how}{seen}"


def image_of(pid: int) -> str | None:
    """The executable path of ``pid``, or None if the OS will not say."""
    if sys.platform == "win32":  # (not os.name: mypy's win32 pass reads only sys.platform)
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.QueryFullProcessImageNameW.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.LPWSTR,
                                                        ctypes.POINTER(wintypes.DWORD)]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return None
        try:
            size = wintypes.DWORD(32768)
            buf = ctypes.create_unicode_buffer(size.value)
            if not kernel32.QueryFullProcessImageNameW(handle, 0, buf, ctypes.byref(size)):
                return None
            return str(Path(buf.value).resolve())
        finally:
            kernel32.CloseHandle(handle)
    import psutil

    try:
        return str(Path(psutil.Process(pid).exe()).resolve())
    except (psutil.Error, OSError):
        return None
