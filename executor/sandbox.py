"""Executor-side containment: own process group, lower priority, die with the supervisor.

The supervisor kills a task's whole tree by process group (POSIX) or Job Object
(Windows, see common/treekill.py). Every descendant also inherits
HIVE_INTERNAL_TREE_TOKEN, so even processes that left the group (double fork,
setsid) are found by the supervisor's kill sweep. The clean-up after a task and
the kill when the supervisor is gone use that same module's kill_tree and
watch_parent.
"""

from __future__ import annotations

import os
import signal
import sys

import psutil

from common.treekill import kill_tree
from common.treekill import watch_parent as _watch_parent
from common.vocabulary import TOKEN_ENV

_PRIORITY_POSIX = {"idle": 19, "below_normal": 10, "normal": 0}
_PRIORITY_WINDOWS = {
    "idle": getattr(psutil, "IDLE_PRIORITY_CLASS", 0x40),
    "below_normal": getattr(psutil, "BELOW_NORMAL_PRIORITY_CLASS", 0x4000),
    "normal": getattr(psutil, "NORMAL_PRIORITY_CLASS", 0x20),
}


def enter(token: str, priority: str) -> None:
    os.environ[TOKEN_ENV] = token
    if sys.platform != "win32":
        try:
            os.setsid()  # our own group: one killpg reaches every descendant that stays in it
        except OSError:
            pass  # already a group leader (cannot happen under spawn, kept for safety)
    if sys.platform.startswith("linux"):
        _become_subreaper()
    if sys.platform == "win32":
        no_crash_dialogs()
    # Ctrl+C in a console reaches every process on it (Windows); only the supervisor decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, signal.SIG_IGN)
    set_priority(priority)


def no_crash_dialogs() -> None:
    """A task that crashes must die at once: by default Windows keeps a crashed process alive
    behind an error-reporting dialog (Wine: a debugger) that nobody at an unattended PC closes.
    The error mode is inherited by every process the task starts (a browser too). Windows only."""
    if sys.platform == "win32":
        import ctypes

        sem_failcriticalerrors, sem_nogpfaulterrorbox, sem_noopenfileerrorbox = 0x0001, 0x0002, 0x8000
        ctypes.windll.kernel32.SetErrorMode(sem_failcriticalerrors | sem_nogpfaulterrorbox | sem_noopenfileerrorbox)


def _become_subreaper() -> None:
    """Orphaned descendants (double fork) re-parent to us instead of init, so they stay
    in our tree: the limits count them and the clean-up after each task finds them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _child_pids() -> list[int]:
    if sys.platform.startswith("linux"):
        pids: list[int] = []
        try:
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{tid}/children") as f:
                    pids.extend(int(p) for p in f.read().split())
            return pids
        except OSError:
            pass
    try:
        return [p.pid for p in psutil.Process().children()]
    except psutil.Error:
        return []


def clean_leftovers() -> int:
    """After a task: kill whatever it left running (a browser not closed, a daemon). Cheap
    when nothing is left (one read per thread on Linux). Returns processes killed."""
    if not _child_pids():
        return 0
    killed = kill_tree(os.getpid(), keep_root=True, wait=2.0)
    if sys.platform != "win32":
        while True:  # re-parented orphans are ours to reap
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
    return killed


def set_priority(priority: str) -> None:
    proc = psutil.Process()
    try:
        if sys.platform == "win32":
            proc.nice(_PRIORITY_WINDOWS[priority])
        else:
            target = _PRIORITY_POSIX[priority]
            if proc.nice() < target:
                proc.nice(target)
    except (psutil.Error, OSError):
        pass  # priority is a courtesy, never a reason to fail


def kill_own_tree() -> None:
    """Kill every process of this executor's tree, then this process itself."""
    kill_tree(os.getpid(), os.environ.get(TOKEN_ENV), keep_root=True)
    if sys.platform != "win32":
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os._exit(70)


def watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    """If the supervisor dies (even by SIGKILL), take the whole task tree down with us.

    On Windows the Job Object's kill-on-close does the same; this thread is the
    POSIX mechanism and a second line of defence on Windows.
    """
    _watch_parent(parent_pid, kill_own_tree, "parent-watch", interval)
