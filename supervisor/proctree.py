"""Measuring and killing a task's whole process tree (executor + every descendant).

Cost matters: the monitor runs several times a second for the whole pool, and
psutil's children(recursive=True) scans every process per call. So each check
takes ONE snapshot of the machine's processes and answers every executor from it:

- Linux: one pass over /proc/*/stat gives parent, CPU time (including reaped
  children's, so a burner that already exited still counts) and RSS per process.
- elsewhere: psutil's parent map plus per-process psutil calls. On Windows the
  memory figure is private bytes (what the process really commits; RSS there is
  the working set, which Windows trims at will); CPU of exited descendants is
  not visible there.

Killing: every descendant stays in the executor's process group unless it
leaves it on purpose, and every descendant inherits the executor's tree token
(see executor/sandbox.py), so the kill sweep stops (SIGSTOP) all it can find,
looks again for processes started meanwhile, then SIGKILLs them all. On Windows
the executor sits in a Job Object (supervisor/winjob.py) that is terminated.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

import psutil

from executor.sandbox import TOKEN_ENV, suspend_then_kill

LINUX = sys.platform.startswith("linux")


@dataclass
class Usage:
    rss: int  # bytes
    cpu: float  # seconds
    pids: list[int]


class Snapshot:
    """One look at every process: parent links plus per-process usage."""

    def __init__(self) -> None:
        self.children: dict[int, list[int]] = {}
        self.stats: dict[int, tuple[int, float]] = {}  # pid -> (rss bytes, cpu seconds)
        if LINUX:
            self._scan_proc()
        else:
            self._scan_psutil()

    if LINUX:
        _PAGE = os.sysconf("SC_PAGE_SIZE")
        _TICK = float(os.sysconf("SC_CLK_TCK"))

    def _scan_proc(self) -> None:
        page, tick = self._PAGE, self._TICK
        children = self.children
        stats = self.stats
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
                try:
                    data = os.read(fd, 1024)
                finally:
                    os.close(fd)
            except OSError:
                continue  # exited meanwhile
            # Fields after "(comm)": state ppid ... utime(12) stime(13) cutime(14) cstime(15) ... rss(22)
            fields = data[data.rfind(b")") + 2:].split()
            pid = int(name)
            children.setdefault(int(fields[1]), []).append(pid)
            cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
            stats[pid] = (int(fields[21]) * page, cpu)

    def _scan_psutil(self) -> None:
        for proc in psutil.process_iter(["ppid"]):
            ppid = proc.info["ppid"]
            if ppid is not None:
                self.children.setdefault(ppid, []).append(proc.pid)

    def tree(self, root: int) -> list[int]:
        pids, stack = [], [root]
        while stack:
            pid = stack.pop()
            pids.append(pid)
            stack.extend(self.children.get(pid, ()))
        return pids

    def usage(self, root: int) -> Usage:
        pids = self.tree(root)
        rss = 0
        cpu = 0.0
        if LINUX:
            for pid in pids:
                stat = self.stats.get(pid)
                if stat:
                    rss += stat[0]
                    cpu += stat[1]
            return Usage(rss, cpu, pids)
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    mem = proc.memory_info()
                    times = proc.cpu_times()
            except psutil.Error:
                continue
            rss += getattr(mem, "private", mem.rss)
            cpu += times.user + times.system + getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
        return Usage(rss, cpu, pids)


def token_holders(token_prefix: str) -> list[int]:
    """PIDs of live processes whose tree token starts with ``token_prefix`` (expensive: reads every environ)."""
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


def kill_tree(root: int, token: str, rounds: int = 10) -> int:
    """Kill the executor ``root`` and every process of its tree, including ones that
    detached from it. Returns how many processes were signalled."""
    if os.name != "posix":
        return _kill_tree_psutil(root, token)
    signalled: set[int] = set()
    for _ in range(rounds):
        # Freeze first so nothing can fork while we look; the group signal is atomic vs fork.
        try:
            os.killpg(root, signal.SIGSTOP)
        except OSError:
            pass
        victims = set(Snapshot().tree(root)) | set(token_holders(token))
        new = victims - signalled
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                pass
        signalled |= victims
        if not new:
            break
    for pid in signalled:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(root, signal.SIGKILL)
    except OSError:
        pass
    return len(signalled)


def _kill_tree_psutil(root: int, token: str) -> int:
    victims: list[psutil.Process] = []
    try:
        parent = psutil.Process(root)
        victims = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        pass
    for pid in token_holders(token):
        try:
            victims.append(psutil.Process(pid))
        except psutil.Error:
            pass
    suspend_then_kill(victims)
    return len(victims)
