"""The pure parts of the process-tree modules (common/proctree.py, treekill.py), without
starting a process: /proc stat parsing, tree walks over a given parent map, the token scan over
given processes, the order of the kill sweep's signals, the parent-death watch."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import psutil
import pytest

from common import proctree, treekill
from common.proctree import Snapshot, Stat, parse_stat

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def stat_line(pid: int = 42, comm: str = "python3", state: str = "S", ppid: int = 7, utime: int = 150,
              stime: int = 50, cutime: int = 30, cstime: int = 20, threads: int = 3, rss: int = 1000) -> bytes:
    """A /proc/<pid>/stat line as Linux 6.x writes it (52 fields), with the ones the parser reads set."""
    after = [state, ppid, ppid, 0, 0, -1, 4194304, 103, 0, 0, 0, utime, stime, cutime, cstime, 20, 0,
             threads, 0, 79186, 3133440, rss, 18446744073709551615] + [0] * 29
    return f"{pid} ({comm}) {' '.join(map(str, after))}\n".encode()


def test_parse_stat_reads_the_fields_limits_need() -> None:
    stat = parse_stat(stat_line(), page=4096, tick=100.0)
    assert stat == Stat(state=b"S", ppid=7, threads=3, rss=1000 * 4096, cpu=2.5)


def test_parse_stat_counts_reaped_children_cpu() -> None:
    # cutime and cstime: what a burner that already exited and was reaped cost, still the tree's.
    assert parse_stat(stat_line(utime=0, stime=0, cutime=300, cstime=100), tick=100.0).cpu == 4.0


@pytest.mark.parametrize("comm", ["a) (b", "x y z", ") S 1 2 3", "((", ""])
def test_parse_stat_survives_any_command_name(comm: str) -> None:
    # A task names its processes: the fields start after the LAST ")" whatever the name holds.
    stat = parse_stat(stat_line(comm=comm, state="Z", ppid=99, threads=1, rss=0))
    assert stat is not None and (stat.state, stat.ppid, stat.threads, stat.rss) == (b"Z", 99, 1, 0)


@pytest.mark.parametrize("data", [b"", b"42 (python3) S 7", b"garbage", b"42 (x) S 7 a b c d e f g h i j k l m n o p q r s t u v"])
def test_parse_stat_gives_none_for_empty_or_garbled(data: bytes) -> None:
    # Empty: the process was reaped between open and read (pread gives b"").
    assert parse_stat(data) is None


def test_parse_stat_uses_this_machines_page_and_tick() -> None:
    stat = parse_stat(stat_line(utime=int(proctree.CLOCK_TICKS), stime=0, cutime=0, cstime=0, rss=3))
    assert stat.cpu == 1.0 and stat.rss == 3 * proctree.PAGE_SIZE


def test_pids_of_a_children_file() -> None:
    assert proctree._pids(b"12 345 6789 ") == [12, 345, 6789]
    assert proctree._pids(b"") == []
    assert proctree._pids(b"12 3x") == []  # garbled: nothing rather than a wrong pid


def snapshot_of(children: dict[int, list[int]]) -> Snapshot:
    """A Snapshot of a made-up machine (no /proc scan)."""
    snap = Snapshot.__new__(Snapshot)
    snap.children, snap.stats = children, {}
    return snap


def test_snapshot_tree_walks_every_level() -> None:
    snap = snapshot_of({1: [10, 20], 10: [11], 11: [12], 20: [], 99: [100]})
    assert sorted(snap.tree(1)) == [1, 10, 11, 12, 20]
    assert snap.tree(12) == [12]
    assert snap.tree(1)[0] == 1  # root first


class FakeProc:
    def __init__(self, pid: int, token: str | None, status: str = psutil.STATUS_SLEEPING, error: bool = False) -> None:
        self.pid, self._token, self._status, self._error = pid, token, status, error

    def environ(self) -> dict[str, str]:
        if self._error:
            raise psutil.AccessDenied(self.pid)
        return {} if self._token is None else {treekill.TOKEN_ENV: self._token}

    def status(self) -> str:
        return self._status


def test_token_holders(monkeypatch: pytest.MonkeyPatch) -> None:
    procs = [FakeProc(2, "100-0-1."), FakeProc(3, "100-0-1."), FakeProc(4, "100-0-10."), FakeProc(5, None),
             FakeProc(6, "100-0-1.", status=psutil.STATUS_ZOMBIE), FakeProc(7, "100-0-1.", error=True),
             FakeProc(os.getpid(), "100-0-1.")]
    monkeypatch.setattr(psutil, "process_iter", lambda: iter(procs))
    # The token ends with a separator, so one executor's token is never the prefix of another's.
    assert treekill.token_holders("100-0-1.") == [2, 3]
    assert treekill.token_holders("100-") == [2, 3, 4]


class Recorder:
    """Stands in for os.kill/os.killpg and for the process table: a kill sweep without processes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, trees: list[dict[int, list[int]]],
                 holders: list[int] = ()) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.trees = list(trees)  # the parent map at each look: children may appear between looks
        monkeypatch.setattr(os, "kill", lambda pid, sig: self.calls.append(("kill", pid, sig)))
        monkeypatch.setattr(os, "killpg", lambda pgid, sig: self.calls.append(("killpg", pgid, sig)))
        monkeypatch.setattr(treekill, "Snapshot", self.snapshot)
        monkeypatch.setattr(treekill, "token_holders", lambda token: list(holders))

    def snapshot(self) -> Snapshot:
        self.calls.append(("look", 0, 0))
        return snapshot_of(self.trees.pop(0) if len(self.trees) > 1 else self.trees[0])


@posix_only
def test_kill_tree_freezes_the_group_before_looking_and_kills_after_a_quiet_look(monkeypatch) -> None:
    # Between the first and the second look, 11 forked 12: it is stopped too, before any SIGKILL.
    rec = Recorder(monkeypatch, [{1: [10, 11]}, {1: [10, 11], 11: [12]}], holders=[50])
    assert treekill.kill_tree(1, "t.") == 5
    stop, kill = signal.SIGSTOP, signal.SIGKILL
    assert rec.calls[:2] == [("killpg", 1, stop), ("look", 0, 0)]
    first_kill = rec.calls.index(next(c for c in rec.calls if c[2] == kill))
    assert {c[1] for c in rec.calls[:first_kill] if c == ("kill", c[1], stop)} == {1, 10, 11, 12, 50}
    assert rec.calls[:first_kill].count(("look", 0, 0)) == 3  # the third look found nothing new
    assert sorted(c[1] for c in rec.calls[first_kill:] if c[0] == "kill") == [1, 10, 11, 12, 50]
    assert rec.calls[-1] == ("killpg", 1, kill)
    assert all(c[2] == kill for c in rec.calls[first_kill:])


@posix_only
def test_kill_tree_keeping_the_root_never_signals_it_or_its_group(monkeypatch) -> None:
    # The executor clearing away what its task left: it is the root and its group's leader.
    rec = Recorder(monkeypatch, [{1: [10], 10: [11]}])
    assert treekill.kill_tree(1, keep_root=True) == 2
    assert not [c for c in rec.calls if c[0] == "killpg" or (c[0] == "kill" and c[1] == 1)]
    assert {(c[1], c[2]) for c in rec.calls if c[0] == "kill"} == \
        {(10, signal.SIGSTOP), (11, signal.SIGSTOP), (10, signal.SIGKILL), (11, signal.SIGKILL)}


@posix_only
def test_kill_tree_gives_up_looking_after_its_rounds(monkeypatch) -> None:
    # A tree that keeps growing faster than it is stopped (cannot happen once the group is stopped,
    # but a process outside the group could): the sweep still ends, killing all it saw.
    trees = [{1: list(range(100, 100 + n))} for n in range(1, 30)]
    rec = Recorder(monkeypatch, trees)
    assert treekill.kill_tree(1, rounds=3) == 4  # the root and 3 children
    assert rec.calls.count(("look", 0, 0)) == 3


def test_kill_group_ignores_a_group_that_is_gone(monkeypatch) -> None:
    def gone(pgid: int, sig: int) -> None:
        raise ProcessLookupError

    monkeypatch.setattr(os, "killpg", gone, raising=False)
    treekill.kill_group(123456)  # no error


def test_watch_parent_calls_on_death_once_the_parent_is_gone(monkeypatch) -> None:
    parent = {"pid": 4242}
    if os.name == "posix":
        monkeypatch.setattr(os, "getppid", lambda: parent["pid"])
    else:
        monkeypatch.setattr(treekill, "_wait_for_exit", lambda pid: False)
        monkeypatch.setattr(psutil, "pid_exists", lambda pid: parent["pid"] == pid)
    died = threading.Event()
    calls: list[Any] = []
    treekill.watch_parent(4242, lambda: (calls.append(1), died.set()), "test-watch", interval=0.01)
    assert not died.wait(0.1)  # the parent lives: nothing happens
    parent["pid"] = 1  # re-parented (POSIX), or gone (Windows)
    assert died.wait(5)
    threading.Event().wait(0.05)
    assert calls == [1]
