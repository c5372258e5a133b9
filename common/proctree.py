"""Measuring a task's whole process tree (executor + every descendant).

Cost matters: the monitor runs several times a second for the whole pool, and
psutil's children(recursive=True) scans every process per call. So each check
takes ONE snapshot of the machine's processes and answers every executor from it:

- Linux: one pass over /proc/*/stat gives parent, CPU time (including reaped
  children's, so a burner that already exited still counts) and RSS per process.
- elsewhere: psutil's parent map plus per-process psutil calls. On Windows the
  memory figure is the commit charge (psutil's ``pagefile``, documented equal to
  private bytes: what the process really commits; RSS there is the working set,
  which Windows trims at will; Wine leaves private bytes unset); CPU of exited
  descendants is not visible there.

The limit monitor reads the executors' trees through TreeMonitor instead (Linux: only
those trees, through /proc files kept open between checks; see its docstring); Snapshot
remains for the kill sweep and as TreeMonitor's fallback.

Both read /proc/<pid>/stat through parse_stat(), the one parser of that line. Killing a tree
(which walks Snapshot's parent links) lives beside this module, in treekill.py.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import psutil

LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"

# (spelled out, not `if LINUX:`, so that mypy's win32 pass skips the POSIX-only calls)
if sys.platform.startswith("linux"):
    PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
    CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK"))
    _DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY
else:  # no /proc to parse; the values only keep parse_stat() total (tests call it anywhere)
    PAGE_SIZE, CLOCK_TICKS = 4096, 100.0
    _DIR_FLAGS = os.O_RDONLY


class Stat(NamedTuple):
    """What the limits and the tree walks need from one /proc/<pid>/stat line."""

    state: bytes  # b"R", b"S", b"Z", ...
    ppid: int
    threads: int
    rss: int  # bytes
    cpu: float  # seconds: user + system, including reaped children's


def parse_stat(data: bytes, page: int = PAGE_SIZE, tick: float = CLOCK_TICKS) -> Stat | None:
    """One /proc/<pid>/stat line; None if empty or garbled (a process that vanished mid-read)."""
    # comm is in parentheses and may itself hold ") " or spaces: the fields start after the LAST ")".
    # Then: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14) ... num_threads(17) ... rss(21)
    fields = data[data.rfind(b")") + 2:].split(None, 22)  # nothing needed after rss
    try:
        cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
        return Stat(fields[0], int(fields[1]), int(fields[17]), int(fields[21]) * page, cpu)
    except (IndexError, ValueError):
        return None


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

    def _scan_proc(self) -> None:
        children = self.children
        stats = self.stats
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            stat = parse_stat(_read_once(f"/proc/{name}/stat"))
            if stat is None:
                continue  # exited meanwhile
            pid = int(name)
            children.setdefault(stat.ppid, []).append(pid)
            stats[pid] = (stat.rss, stat.cpu)

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
            rss += _committed(mem)
            cpu += times.user + times.system + getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
        return Usage(rss, cpu, pids)


def _committed(mem: Any) -> int:
    """The memory figure limits use: RSS on POSIX; on Windows the commit charge (pagefile),
    which Windows documents as equal to private bytes. Wine fills only the commit charge."""
    return mem.pagefile if WINDOWS else mem.rss


@cache
def children_files_supported() -> bool:
    """Whether TreeMonitor can walk trees here: Linux with /proc/<pid>/task/<tid>/children
    (CONFIG_PROC_CHILDREN, Linux >= 3.5). Checked once per process."""
    if not LINUX or not hasattr(os, "pread"):
        return False
    return os.path.exists(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children")


def _default_max_fds() -> int:
    """A quarter of the soft RLIMIT_NOFILE, between 16 and 1024: the monitor must never starve the
    supervisor's sockets, pipes and journal of descriptors, whatever a task does."""
    if sys.platform == "win32":  # no resource module (its ImportError below would say the same)
        return 256
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft // 4))


_READ_SIZE = 4096  # a stat line is well under 1 KiB; a children file may need several reads


class _Member:
    """The open /proc files of one process of a tree (-1: not open)."""

    __slots__ = ("stat", "task", "children")

    def __init__(self, stat: int) -> None:
        self.stat = stat  # /proc/<pid>/stat
        self.task = -1  # /proc/<pid>/task (directory), opened once the process has several threads
        self.children: dict[int, int] = {}  # tid -> /proc/<pid>/task/<tid>/children


class TreeMonitor:
    """usage(root) of one process tree at a time, at a cost proportional to that tree (Linux).

    Why: Snapshot() opens and reads every /proc/*/stat on the machine (~30 µs each, 1.5-2 ms per
    scan with ~70 processes), and the limit monitor needed one every 0.1 s: ~2.6% of a core with
    16 busy executors. This class walks only the executor's tree, from the root down through
    /proc/<pid>/task/<tid>/children, and keeps file descriptors open on each member's ``stat`` and
    ``children`` files between calls: re-reading them with os.pread costs ~5.6 µs and ~1 µs
    against ~30 µs for open+read+close (the prototype, bench/whatif.py ``procwalk``, measured
    ~0.7% of a core for the same pool).

    What the /proc files do when a process goes away (Linux 6.x, checked by the tests):
    pread on the fd of a reaped process's ``stat`` fails with ESRCH (a zombie's still reads, with
    rss 0), its ``children`` and a dead thread's ``children`` read as empty (no error), and listing
    its ``task`` directory through a kept fd gives []. A kept fd always names the process it was
    opened on, never a later process with the same pid; so when a ``stat`` read fails the whole
    entry is closed and the pid's files are opened again (a new process with that pid may be a
    member now), and the ``stat`` fd is re-read after opening a member's other files to be sure the
    pid still named the same process meanwhile.

    Threads: children belong to the thread that forked them, so every thread's ``children`` file is
    read. With one thread (num_threads in stat) the only thread is the leader (tid == pid: a leader
    that exits before its other threads stays listed, as a zombie, and keeps being counted); with
    several, the thread list is read again on every call (a listdir through a kept directory fd,
    ~6 µs), since a thread can end and another start between two calls without num_threads
    changing. A process whose leader thread exited while others run shows state Z and rss 0 in
    /proc/<pid>/stat although its memory is alive: its rss is then read from a live thread's stat
    (Snapshot misses that memory).

    Descriptors: the cache is per root; after each usage(root), the fds of processes no longer in
    that root's tree (exited, or left it) are closed, so what stays open is bounded by the live
    trees. forget(root) closes one root's (call it when an executor is killed or replaced),
    retain(roots) all but those roots', close() all. At most ``max_fds`` are kept (default: a
    quarter of RLIMIT_NOFILE, at most 1024); beyond that members are read with open+read+close,
    slower but still correct, so a task with thousands of processes or threads cannot exhaust the
    supervisor's descriptors. The fds are not inherited by child processes (PEP 446).

    Fallback: without the children files (CONFIG_PROC_CHILDREN off, or not Linux) or with
    ``walk=False``, every usage() call takes one Snapshot() (correct, machine-sized cost).

    A root that does not exist (or has been reaped) gives Usage(0, 0.0, []): no process, nothing
    used. Zombies are listed with their CPU (rss 0). Processes that vanish mid-walk are skipped;
    usage() never raises for races. Not thread-safe: one thread (the supervisor's) uses it.
    """

    def __init__(self, walk: bool | None = None, max_fds: int | None = None) -> None:
        """``walk``: None = walk trees when the kernel allows, else fall back to Snapshot; False =
        always Snapshot (the fallback, e.g. to compare); True = walk, ValueError if impossible."""
        supported = children_files_supported()
        if walk and not supported:
            raise ValueError("tree walk needs Linux with /proc/<pid>/task/<tid>/children")
        self.walking: bool = supported if walk is None else walk
        self.max_fds: int = _default_max_fds() if max_fds is None else max_fds
        self._trees: dict[int, dict[int, _Member]] = {}  # root -> pid -> open files, as of its last walk
        self._open = 0  # fds currently open
        self._opened = 0  # fds ever opened (tells a visit whether it opened any)

    # ---- public -----------------------------------------------------------------------------

    def usage(self, root: int) -> Usage:
        """RSS bytes and CPU seconds (user+system, including reaped children's) of ``root`` and
        every descendant, with their pids (root first)."""
        if root <= 0:
            return Usage(0, 0.0, [])  # no executor (pid 0 is Windows' idle process, never ours)
        if not self.walking:
            return self._snapshot_usage(root)
        old = self._trees.pop(root, {})
        new: dict[int, _Member] = {}
        seen: set[int] = set()
        pids: list[int] = []
        rss = 0
        cpu = 0.0
        stack = [root]
        try:
            while stack:
                pid = stack.pop()
                if pid in seen:
                    continue  # listed twice (a race): count once
                seen.add(pid)
                member = old.pop(pid, None)
                found = self._visit(pid, member) if member is not None or self._open < self.max_fds \
                    else self._visit_uncached(pid)
                if found is None:
                    continue
                member, p_rss, p_cpu, kids = found
                if member is not None:
                    new[pid] = member
                pids.append(pid)
                rss += p_rss
                cpu += p_cpu
                stack.extend(reversed(kids))
        finally:
            for member in old.values():  # exited or left the tree
                self._close(member)
            if new:
                self._trees[root] = new
        return Usage(rss, cpu, pids)

    def forget(self, root: int) -> None:
        """Close every fd of ``root``'s last walk (its executor was killed or replaced)."""
        for member in self._trees.pop(root, {}).values():
            self._close(member)

    def retain(self, roots: Iterable[int]) -> None:
        """Forget every root but these (e.g. the executors that are still alive)."""
        keep = set(roots)
        for root in [r for r in self._trees if r not in keep]:
            self.forget(root)

    def close(self) -> None:
        """Close every fd."""
        for root in list(self._trees):
            self.forget(root)

    @property
    def open_fds(self) -> int:
        """How many /proc fds this monitor holds open."""
        return self._open

    def __enter__(self) -> TreeMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError, TypeError):  # interpreter shutdown
            pass

    # ---- walk -------------------------------------------------------------------------------

    def _visit(self, pid: int, member: _Member | None) -> tuple[_Member, int, float, list[int]] | None:
        """Read one member through its kept fds (opening them if new). None: it is gone."""
        opened_before = self._opened
        data = _pread(member.stat) if member is not None else b""
        if member is None or not data:
            if member is not None:  # reaped: these fds will never read again; the pid may be reused
                self._close(member)
            fd = self._openfd(f"/proc/{pid}/stat")
            if fd < 0:
                return None
            member = _Member(fd)
            data = _pread(fd)
        stat = parse_stat(data)
        if stat is None:
            self._close(member)
            return None
        rss = stat.rss
        tids, kids = self._children(pid, member, stat.threads)
        if stat.state == b"Z" and stat.threads > 1:
            rss = self._live_thread_rss(pid, tids)
        if self._opened != opened_before and not _pread(member.stat):
            # It died while its other files were being opened: the pid might have named another process.
            self._close(member)
            return None
        return member, rss, stat.cpu, kids

    def _children(self, pid: int, member: _Member, threads: int) -> tuple[list[int], list[int]]:
        """(tids, child pids) of a member, through kept fds."""
        if threads <= 1:
            if len(member.children) == 1:  # the common case: one thread, already open
                fd = member.children.get(pid)
                if fd is not None:
                    return [pid], _pids(_pread_all(fd))
            tids = [pid]
        else:
            if member.task < 0:
                member.task = self._openfd(f"/proc/{pid}/task", _DIR_FLAGS)
            try:
                tids = [int(name) for name in os.listdir(member.task)] if member.task >= 0 else []
            except (OSError, ValueError):
                tids = []
        for tid in [t for t in member.children if t not in tids]:  # threads that ended
            self._closefd(member.children.pop(tid))
        kids: list[int] = []
        for tid in tids:
            fd = member.children.get(tid)
            if fd is None:
                path = f"/proc/{pid}/task/{tid}/children"
                if self._open >= self.max_fds:
                    kids.extend(_pids(_read_once(path)))
                    continue
                fd = self._openfd(path)
                if fd < 0:
                    continue  # the thread ended
                member.children[tid] = fd
            kids.extend(_pids(_pread_all(fd)))
        return tids, kids

    def _visit_uncached(self, pid: int) -> tuple[None, int, float, list[int]] | None:
        """Read one member with open+read+close (the fd budget is spent)."""
        stat = parse_stat(_read_once(f"/proc/{pid}/stat"))
        if stat is None:
            return None
        rss = stat.rss
        if stat.threads <= 1:
            tids = [pid]
        else:
            try:
                tids = [int(name) for name in os.listdir(f"/proc/{pid}/task")]
            except (OSError, ValueError):
                tids = []
        kids: list[int] = []
        for tid in tids:
            kids.extend(_pids(_read_once(f"/proc/{pid}/task/{tid}/children")))
        if stat.state == b"Z" and stat.threads > 1:
            rss = self._live_thread_rss(pid, tids)
        return None, rss, stat.cpu, kids

    def _live_thread_rss(self, pid: int, tids: list[int]) -> int:
        """RSS of a process whose leader thread has exited: read from a thread still running."""
        for tid in tids:
            if tid == pid:
                continue
            stat = parse_stat(_read_once(f"/proc/{pid}/task/{tid}/stat"))
            if stat is not None and stat.state != b"Z":
                return stat.rss
        return 0

    # ---- fds --------------------------------------------------------------------------------

    def _openfd(self, path: str, flags: int = os.O_RDONLY) -> int:
        try:
            fd = os.open(path, flags)
        except OSError:
            return -1  # gone (or, were the supervisor out of fds, skipped like a vanished process)
        self._open += 1
        self._opened += 1
        return fd

    def _closefd(self, fd: int) -> None:
        if fd >= 0:
            self._open -= 1
            try:
                os.close(fd)
            except OSError:
                pass

    def _close(self, member: _Member) -> None:
        self._closefd(member.stat)
        self._closefd(member.task)
        for fd in member.children.values():
            self._closefd(fd)
        member.stat = member.task = -1
        member.children = {}

    # ---- fallback ---------------------------------------------------------------------------

    @staticmethod
    def _snapshot_usage(root: int) -> Usage:
        snapshot = Snapshot()
        if LINUX:
            if root not in snapshot.stats:
                return Usage(0, 0.0, [])
        elif not psutil.pid_exists(root):
            return Usage(0, 0.0, [])
        return snapshot.usage(root)


def _pread(fd: int) -> bytes:
    """A kept /proc file's content; b"" if its process is gone (ESRCH)."""
    if sys.platform == "win32":  # no pread there, and no /proc: only Linux keeps fds (TreeMonitor)
        return b""
    try:
        return os.pread(fd, _READ_SIZE, 0)
    except OSError:
        return b""


def _pread_all(fd: int) -> bytes:
    """A kept children file's whole content. It can exceed one read (hundreds of children): then
    it is read again whole with a larger buffer, as one consistent listing (pieces read at several
    offsets could come from different moments and split a pid in two)."""
    if sys.platform == "win32":  # as _pread
        return b""
    size = _READ_SIZE
    try:
        data = os.pread(fd, size, 0)
        while len(data) == size:
            size *= 16
            data = os.pread(fd, size, 0)
    except OSError:
        return b""
    return data


def _read_once(path: str) -> bytes:
    """open+read+close of a /proc file; b"" if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return _pread_all(fd)
    finally:
        os.close(fd)


def _pids(data: bytes) -> list[int]:
    try:
        return list(map(int, data.split()))
    except ValueError:
        return []
