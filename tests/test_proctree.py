"""TreeMonitor (common/proctree.py): the limit monitor's per-tree /proc walk, and the fallback
that serves Windows (psutil's parent map, commit charge). Real processes, no mocks.

Each test starts its processes in a new session (a new process group on Windows) and kills the
whole tree at teardown.
Counts of open descriptors are checked both through TreeMonitor.open_fds and through
/proc/self/fd, so a leak shows whichever way it happens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from common.proctree import Snapshot, TreeMonitor, Usage, _Member, children_files_supported

MB = 1024 * 1024

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
walk_only = pytest.mark.skipif(not children_files_supported(),
                               reason="needs /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN)")
WINDOWS = os.name == "nt"

# A process that holds MEM_MB of touched memory, burns BURN s of CPU, starts the next level
# (depth - 1), prints its pid and then blocks until its stdin (shared by the whole tree) closes.
TREE = """
import os, subprocess, sys, time
depth, mem_mb, burn = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
mem = bytearray(mem_mb * 2**20)
for i in range(0, len(mem), 4096):
    mem[i] = 1
t = time.process_time()
while time.process_time() - t < burn:
    pass
if depth > 1:
    subprocess.Popen([sys.executable, __file__, str(depth - 1), str(mem_mb), str(burn)])
print(os.getpid(), flush=True)
sys.stdin.read()
"""

# Runs a CPU burner child to completion (reaped), then reports and waits.
REAPER = """
import subprocess, sys
subprocess.run([sys.executable, "-c",
                "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass"], check=True)
print("reaped", flush=True)
sys.stdin.read()
"""

# Obeys commands on stdin: "spawn" (a `sleep` child, from the main thread), "kill PID",
# "thread" (swap its helper thread for a new one, with the same thread count, and have the new
# one start a child). Answers each command with one line.
CONTROLLER = """
import subprocess, sys, threading
kids = {}
stop = threading.Event()
helper = threading.Thread(target=stop.wait)
helper.start()
print("ready", flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "spawn":
        p = subprocess.Popen(["sleep", "60"])
        kids[p.pid] = p
        print(p.pid, flush=True)
    elif cmd == "kill":
        p = kids.pop(int(args[0]))
        p.kill()
        p.wait()
        print("killed", flush=True)
    elif cmd == "thread":
        started, go = threading.Event(), threading.Event()
        box = []
        def run():
            started.set()
            go.wait()
            p = subprocess.Popen(["sleep", "60"])
            kids[p.pid] = p
            box.append(p.pid)
            go.clear()
            stop.wait()
        # Let the old helper end first, then start the new one: two threads before and after.
        stop.set()
        helper.join()
        stop = threading.Event()
        helper = threading.Thread(target=run)
        helper.start()
        started.wait()
        go.set()
        while not box:
            pass
        print(box[0], flush=True)
"""

# Starts and reaps short-lived children from its main thread and from threads that come and go.
CHURN = """
import subprocess, sys, threading, time
def spawner():
    for _ in range(5):
        subprocess.run(["sleep", "0.01"])
def main():
    while True:
        t = threading.Thread(target=spawner)
        t.start()
        subprocess.run(["sleep", "0.02"])
        t.join()
threading.Thread(target=main, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

# Its main (leader) thread exits while another thread keeps MEM_MB of memory alive.
LEADER_EXITS = """
import ctypes, sys, threading, time
ready = threading.Event()
def keep():
    mem = bytearray(80 * 2**20)
    for i in range(0, len(mem), 4096):
        mem[i] = 1
    ready.set()
    sys.stdin.read()
threading.Thread(target=keep).start()
ready.wait()
print("ready", flush=True)
time.sleep(0.1)
ctypes.CDLL(None).pthread_exit(None)
"""


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(source: str, *args: str) -> subprocess.Popen[str]:
        script = tmp_path / f"script{len(started)}.py"
        script.write_text(textwrap.dedent(source))
        group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if WINDOWS else {"start_new_session": True}
        proc = subprocess.Popen([sys.executable, str(script), *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, **group)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if WINDOWS:
            try:
                victims = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            except psutil.Error:
                victims = []
            for victim in victims:
                try:
                    victim.kill()
                except psutil.Error:
                    pass
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe:
                pipe.close()


def ask(proc: subprocess.Popen[str], command: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def _fd_targets() -> list[str]:
    """What each of this process's fds is open on (the listing's own fd may be gone already)."""
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            continue
    return targets


def fd_count() -> int:
    """This process's fds on files and folders: what the monitor opens. Sockets and pipes are left
    out: earlier tests' servers and clients close theirs from other threads or at garbage
    collection, at any moment of this test (27 fds against a baseline of 25 + 4, seen once)."""
    return sum(not t.startswith(("socket:", "pipe:", "anon_inode:")) for t in _fd_targets())


def proc_fds() -> int:
    """This process's fds open on /proc/<pid>/... files (the monitor's), excluding /proc/self/fd's own."""
    return sum(t.startswith("/proc/") and t[6:7].isdigit() and not t.endswith("/fd") for t in _fd_targets())


def start_tree(spawn: Callable[..., subprocess.Popen[str]], depth: int = 3, mem_mb: int = 40,
               burn: float = 0.1) -> tuple[int, list[int]]:
    root = spawn(TREE, str(depth), str(mem_mb), str(burn))
    assert root.stdout is not None
    pids = [int(root.stdout.readline()) for _ in range(depth)]
    return root.pid, pids


def assert_same(a: Usage, b: Usage) -> None:
    assert sorted(a.pids) == sorted(b.pids)
    assert abs(a.rss - b.rss) <= 2 * MB, (a, b)
    assert abs(a.cpu - b.cpu) <= 0.05, (a, b)


@walk_only
def test_tree_matches_snapshot(spawn):
    root, pids = start_tree(spawn, depth=3, mem_mb=40, burn=0.1)
    with TreeMonitor() as monitor:
        assert monitor.walking
        first = monitor.usage(root)
        snap = Snapshot().usage(root)
        again = monitor.usage(root)  # through the kept fds this time
    assert sorted(first.pids) == sorted(pids) and first.pids[0] == root
    assert_same(first, snap)
    assert_same(again, snap)
    assert again.rss >= 3 * 40 * MB
    assert again.cpu >= 0.25


@walk_only
def test_reaped_child_cpu_counts(spawn):
    parent = spawn(REAPER)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "reaped"
    with TreeMonitor() as monitor:
        usage = monitor.usage(parent.pid)
    assert usage.pids == [parent.pid]
    assert usage.cpu >= 0.25
    assert_same(usage, Snapshot().usage(parent.pid))


@walk_only
def test_children_come_and_go_without_fd_leak(spawn):
    ctl = spawn(CONTROLLER)
    assert ctl.stdout is not None and ctl.stdout.readline().strip() == "ready"
    baseline = fd_count()
    monitor = TreeMonitor()
    assert monitor.usage(ctl.pid).pids == [ctl.pid]
    held = monitor.open_fds
    assert held == proc_fds() > 0

    kid = int(ask(ctl, "spawn"))
    assert sorted(monitor.usage(ctl.pid).pids) == sorted([ctl.pid, kid])
    assert monitor.open_fds > held
    assert ask(ctl, "kill " + str(kid)) == "killed"
    assert monitor.usage(ctl.pid).pids == [ctl.pid]
    assert monitor.open_fds == held == proc_fds()

    for _ in range(30):
        kids = [int(ask(ctl, "spawn")) for _ in range(3)]
        assert sorted(monitor.usage(ctl.pid).pids) == sorted([ctl.pid, *kids])
        for kid in kids:
            ask(ctl, f"kill {kid}")
        assert monitor.usage(ctl.pid).pids == [ctl.pid]
        assert monitor.open_fds == held == proc_fds()
    assert fd_count() == baseline + held
    monitor.close()
    assert fd_count() == baseline


@walk_only
def test_child_of_a_new_thread_is_found_when_the_thread_count_stays(spawn):
    """A thread ends and another starts between two calls (num_threads unchanged); the new
    thread's child must be found: thread lists are not trusted across calls."""
    ctl = spawn(CONTROLLER)
    assert ctl.stdout is not None and ctl.stdout.readline().strip() == "ready"
    with TreeMonitor() as monitor:
        assert monitor.usage(ctl.pid).pids == [ctl.pid]
        kid = int(ask(ctl, "thread"))
        assert sorted(monitor.usage(ctl.pid).pids) == sorted([ctl.pid, kid])
        assert_same(monitor.usage(ctl.pid), Snapshot().usage(ctl.pid))


@walk_only
def test_churn_stays_bounded(spawn):
    churn = spawn(CHURN)
    assert churn.stdout is not None and churn.stdout.readline().strip() == "ready"
    baseline = fd_count()
    monitor = TreeMonitor()
    most = 0
    for _ in range(200):
        usage = monitor.usage(churn.pid)
        assert usage.pids[0] == churn.pid
        assert monitor.open_fds == proc_fds()
        most = max(most, monitor.open_fds)
        time.sleep(0.002)
    # The churner has at most 3 threads and 2 children at a time: a few fds each.
    assert most <= 20
    os.killpg(churn.pid, signal.SIGKILL)
    churn.wait()
    assert monitor.usage(churn.pid) == Usage(0, 0.0, [])
    assert monitor.open_fds == 0
    assert fd_count() == baseline


@walk_only
def test_forget_retain_and_close(spawn):
    root1, _ = start_tree(spawn, depth=2, mem_mb=1, burn=0)
    root2, _ = start_tree(spawn, depth=3, mem_mb=1, burn=0)
    baseline = fd_count()
    monitor = TreeMonitor()
    monitor.usage(root1)
    alone1 = monitor.open_fds
    monitor.usage(root2)
    both = monitor.open_fds
    assert both > alone1 > 0
    assert fd_count() == baseline + both
    monitor.forget(root1)
    assert monitor.open_fds == both - alone1
    assert fd_count() == baseline + both - alone1
    monitor.forget(root1)  # twice: nothing left to close
    monitor.usage(root1)
    monitor.retain([root1])
    assert monitor.open_fds == alone1
    monitor.close()
    assert monitor.open_fds == 0
    assert fd_count() == baseline
    assert len(monitor.usage(root2).pids) == 3  # still usable after close()
    monitor.close()
    assert fd_count() == baseline


@pytest.mark.parametrize("walk", [None, False])
def test_missing_root_is_an_empty_tree(walk):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names nothing (until reused, which is far away)
    with TreeMonitor(walk=walk) as monitor:
        assert monitor.usage(gone.pid) == Usage(0, 0.0, [])
        assert monitor.usage(0) == Usage(0, 0.0, [])
        assert monitor.open_fds == 0


def test_fallback_counts_every_level_of_the_tree(spawn):
    """The path Windows takes (and Linux without /proc children files): every process of a
    three-level tree, its memory (commit charge on Windows) and its CPU."""
    root, pids = start_tree(spawn, depth=3, mem_mb=40, burn=0.2)
    with TreeMonitor(walk=False) as monitor:
        usage = monitor.usage(root)
    assert sorted(usage.pids) == sorted(pids)
    assert usage.rss >= 3 * 40 * MB, usage
    assert usage.cpu >= 3 * 0.2 * 0.9, usage  # process_time granularity


@linux_only
def test_fallback_gives_the_same_answer(spawn):
    root, pids = start_tree(spawn, depth=3, mem_mb=20, burn=0.05)
    with TreeMonitor(walk=False) as fallback:
        assert not fallback.walking
        slow = fallback.usage(root)
        assert fallback.open_fds == 0
    assert sorted(slow.pids) == sorted(pids)
    assert_same(slow, Snapshot().usage(root))
    if children_files_supported():
        with TreeMonitor() as monitor:
            assert_same(monitor.usage(root), slow)


@walk_only
def test_fd_budget_reads_the_rest_uncached(spawn):
    root, pids = start_tree(spawn, depth=4, mem_mb=1, burn=0)
    with TreeMonitor(max_fds=3) as monitor:
        for _ in range(3):
            usage = monitor.usage(root)
            assert sorted(usage.pids) == sorted(pids)
            assert monitor.open_fds <= 3 and monitor.open_fds == proc_fds()
        assert_same(usage, Snapshot().usage(root))


@walk_only
def test_memory_of_a_process_whose_leader_thread_exited(spawn):
    """/proc/<pid>/stat shows such a process as a zombie with rss 0 while a thread holds its memory."""
    proc = spawn(LEADER_EXITS)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z":
        assert time.monotonic() < deadline, "the leader thread did not exit"
        time.sleep(0.02)
    with TreeMonitor() as monitor:
        usage = monitor.usage(proc.pid)
        assert usage.pids == [proc.pid]
        assert usage.rss >= 80 * MB
    with TreeMonitor(max_fds=0) as uncached:
        assert uncached.usage(proc.pid).rss >= 80 * MB


@walk_only
def test_pid_reuse_reopens_the_files(spawn):
    """Stands in for a pid reused between two calls (white-box: pid_max is too far to cycle in a
    test): the cache holds, under a live member's pid, fds opened on a process since reaped. The
    walk must drop them all (stat and children), reopen the pid's files and still find the member's
    child."""
    root, (_, kid, grandkid) = start_tree(spawn, depth=3, mem_mb=1, burn=0)
    dead = subprocess.Popen(["true"])
    stale = [os.open(f"/proc/{dead.pid}/stat", os.O_RDONLY),
             os.open(f"/proc/{dead.pid}/task/{dead.pid}/children", os.O_RDONLY),
             os.open(f"/proc/{dead.pid}/task", os.O_RDONLY | os.O_DIRECTORY)]
    dead.wait()
    with TreeMonitor() as monitor:
        expected = monitor.usage(root)
        members = monitor._trees[root]
        monitor._close(members[kid])
        member = _Member(stale[0])
        member.children[kid] = stale[1]  # as if the dead process had had the same pid
        member.task = stale[2]
        members[kid] = member
        monitor._open += 3
        usage = monitor.usage(root)
        assert sorted(usage.pids) == sorted(expected.pids) == sorted([root, kid, grandkid])
        assert_same(usage, expected)
        assert member.stat == member.task == -1 and not member.children  # dropped
        for fd in stale:  # closed (the number may have been reused by the reopening)
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:
                continue
            assert not target.startswith(f"/proc/{dead.pid}/")
        assert monitor.open_fds == proc_fds()


@walk_only
def test_proc_files_of_a_reaped_process():
    """What the walk relies on: a kept stat fd of a reaped process fails (ESRCH) or reads empty,
    and its children file reads empty; neither ever shows another process."""
    child = subprocess.Popen(["sleep", "0.1"])
    stat = os.open(f"/proc/{child.pid}/stat", os.O_RDONLY)
    children = os.open(f"/proc/{child.pid}/task/{child.pid}/children", os.O_RDONLY)
    try:
        assert os.pread(stat, 4096, 0).startswith(f"{child.pid} (".encode())
        child.wait()
        try:
            assert os.pread(stat, 4096, 0) == b""
        except ProcessLookupError:
            pass
        assert os.pread(children, 4096, 0) == b""
    finally:
        os.close(stat)
        os.close(children)
