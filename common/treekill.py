"""Killing a process tree, and dying with a parent: the one place the worker does either.

Who calls it: the pool's kill of an executor (executors.py), the executor itself after each task
and when the supervisor is gone (executor/sandbox.py), the updater when a new binary's self-test
hangs (update/updater.py), and the one-file build's tether to its bootloader (supervisor/host/frozen.py).

Freeze first, then kill: a process that forks while its tree is being killed can leave a child
behind (the kill reached the parent before the new child was seen). So kill_tree stops everything
it finds (SIGSTOP; psutil's suspend on Windows), looks again for processes started meanwhile, and
only then kills them all. On POSIX every descendant stays in the root's process group unless it
leaves it on purpose, and a signal to the group is atomic against fork; every descendant of an
executor also inherits its tree token (TOKEN_ENV), so processes that left both the group and the
tree (double fork, setsid) are still found. On Windows each executor sits in a Job Object
(winjob.py) that the pool terminates first; kill_tree is the second line there.

Why in supervisor/pool beside proctree.py: the sweep walks the same parent links the limits read
(proctree.Snapshot, the one /proc stat parser). executor/sandbox.py imports this module; neither
it nor proctree imports executor/, so the import graph has no cycle.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable

import psutil

from common.proctree import Snapshot
from common.vocabulary import TOKEN_ENV

# Every process of one executor's tree carries this variable, set to the executor's token.

# The platform checks below are spelled as sys.platform, not os.name (the same on the two systems the
# worker runs on): mypy's per-platform passes read only those, and so check each branch on its own.


def token_holders(token_prefix: str) -> list[int]:
    """PIDs of live processes whose tree token starts with ``token_prefix`` (expensive: reads every
    environ). This process is never listed."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            value = proc.environ().get(TOKEN_ENV)
            if value and value.startswith(token_prefix) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def kill_tree(root: int, token: str | None = None, *, keep_root: bool = False, wait: float = 0.0,
              rounds: int = 10) -> int:
    """Kill ``root``, every descendant of it and, given ``token``, every process carrying it (those
    that detached from the tree). Returns how many processes were signalled.

    ``keep_root``: spare ``root`` itself (a process clearing away its own children; on POSIX its
    group is then not signalled, since ``root`` is in it). ``wait``: seconds to wait for the
    victims to be gone, reaping those that are this process's children."""
    if sys.platform == "win32":
        return _kill_tree_psutil(root, token, keep_root, wait)
    group = not keep_root
    signalled: set[int] = set()
    for _ in range(rounds):
        if group:  # freeze first so nothing can fork while we look
            _signal_group(root, signal.SIGSTOP)
        victims = set(Snapshot().tree(root))
        if token:
            victims.update(token_holders(token))
        if keep_root:
            victims.discard(root)
        new = victims - signalled
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        signalled |= victims
        if not new:
            break
    stopped = _processes(signalled) if wait > 0 else []  # while stopped, each pid still names its process
    for pid in signalled:
        _signal(pid, signal.SIGKILL)
    if group:
        _signal_group(root, signal.SIGKILL)
    if stopped:
        psutil.wait_procs(stopped, timeout=wait)
    return len(signalled)


def kill_group(pgid: int) -> None:
    """POSIX: SIGKILL whatever is left in process group ``pgid`` (e.g. a finished child started in
    its own session). Safe after its leader was reaped: a group id is not reused while a member
    lives. Nothing to do on Windows, where no such group exists."""
    if sys.platform != "win32":
        _signal_group(pgid, signal.SIGKILL)


def _kill_tree_psutil(root: int, token: str | None, keep_root: bool, wait: float) -> int:
    victims: list[psutil.Process] = []
    try:
        parent = psutil.Process(root)
        victims = parent.children(recursive=True)
        if not keep_root:
            victims.insert(0, parent)
    except psutil.Error:
        pass
    for pid in token_holders(token) if token else ():
        if keep_root and pid == root:
            continue
        try:
            victims.append(psutil.Process(pid))
        except psutil.Error:
            pass
    # Freeze every victim first, so none can start new processes while the others die.
    for proc in victims:
        try:
            proc.suspend()
        except psutil.Error:
            pass
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            pass
    if wait > 0:
        psutil.wait_procs(victims, timeout=wait)
    return len(victims)


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return procs


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass  # already gone


def _signal_group(pgid: int, sig: int) -> None:
    if sys.platform == "win32":  # no process groups to signal (only POSIX paths call this)
        return
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass  # no such group (left empty), or not ours


# ---- dying with a parent ---------------------------------------------------------------------------

def watch_parent(parent_pid: int, on_death: Callable[[], object], name: str, interval: float = 0.5) -> None:
    """Call ``on_death`` from a daemon thread ``name`` once ``parent_pid`` is gone, however it died
    (a SIGKILL or TerminateProcess gives its children no notice).

    POSIX: polled; a changed getppid() means the parent exited and we were re-parented. Windows: a
    wait on the parent's process handle (no delay, immune to pid reuse), else polled through
    psutil: never os.kill(pid, 0) there, which sends Ctrl+C."""

    def loop() -> None:
        if sys.platform == "win32" and _wait_for_exit(parent_pid):
            on_death()
            return
        while True:
            time.sleep(interval)
            alive = psutil.pid_exists(parent_pid) if sys.platform == "win32" else os.getppid() == parent_pid
            if not alive:
                on_death()
                return

    threading.Thread(target=loop, name=name, daemon=True).start()


def _wait_for_exit(pid: int) -> bool:
    """Windows: block until ``pid`` has exited (True); False at once if its handle cannot be had or
    waited on (the caller then polls)."""
    if sys.platform != "win32":
        return False
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.WaitForSingleObject.argtypes = [wintypes.HANDLE, wintypes.DWORD]
    kernel32.WaitForSingleObject.restype = wintypes.DWORD
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    handle = kernel32.OpenProcess(0x00100000, False, pid)  # SYNCHRONIZE
    if not handle:
        return False
    try:
        return kernel32.WaitForSingleObject(handle, 0xFFFFFFFF) == 0  # INFINITE; WAIT_OBJECT_0: it exited
    finally:
        kernel32.CloseHandle(handle)
