"""Frozen one-file build only: the supervisor dies with its bootloader (docs/release.md).

A one-file build runs as two processes: the bootloader (the PID Task Scheduler,
systemd or an updater sees; it unpacks the bundle into _MEI*) and its child, the
supervisor. SIGTERM and Ctrl+C are forwarded, but a hard kill of the bootloader
(SIGKILL, "End task", schtasks /End) would leave the supervisor running orphaned,
still claiming tasks. Called once by main.py after freeze_support() (executors and
the resource tracker never get there), this kills the supervisor the same hard
way when its bootloader is gone; its executors follow it (executor/sandbox.py,
Job Objects on Windows). It does nothing from source or in a onedir build, and
never raises.
"""

from __future__ import annotations

import os
import sys
import threading
import time


def tether_to_bootloader() -> None:
    if not getattr(sys, "frozen", False):
        return
    try:
        _tether()
    except Exception as exc:  # noqa: BLE001 - never stop the worker from starting
        if sys.stderr is not None:
            print(f"warning: cannot tie the worker to its bootloader: {exc!r}", file=sys.stderr)


def _tether() -> None:
    ppid = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            if os.readlink(f"/proc/{ppid}/exe") != os.readlink("/proc/self/exe"):
                return  # onedir build, or started by something else: no bootloader above us
        except OSError:
            return
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0:
            if os.getppid() != ppid:  # the bootloader died before the kernel was told
                os.kill(os.getpid(), signal.SIGKILL)
            return
    import psutil

    try:
        if not os.path.samefile(psutil.Process(ppid).exe(), sys.executable):
            return
    except (psutil.Error, OSError):
        return
    threading.Thread(target=_watch, args=(ppid,), name="bootloader-tether", daemon=True).start()


def _watch(ppid: int) -> None:
    if os.name == "nt":
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.WaitForSingleObject.argtypes = [wintypes.HANDLE, wintypes.DWORD]
        kernel32.WaitForSingleObject.restype = wintypes.DWORD
        handle = kernel32.OpenProcess(0x00100000, False, ppid)  # SYNCHRONIZE
        if handle:
            kernel32.WaitForSingleObject(handle, 0xFFFFFFFF)  # INFINITE
            os._exit(1)  # closes our handles: the executors' Job Objects kill them
    import psutil

    while True:  # macOS, or a handle we could not open
        time.sleep(0.5)
        if (os.getppid() != ppid) if os.name == "posix" else not psutil.pid_exists(ppid):
            os._exit(1)
