"""The pool's behaviours without a process: the real Pool, fed by fake executors that speak the
real frames on a real pipe (tests/support/fake_executor.py), a clock the test moves and trees
the test sizes. Crash respawn and its backoff, recycling, start timeouts, import failure, limit
kills, pauses, dev reload, and the Done frame's result handed on byte for byte.

Real executor processes prove only the mechanisms: a real crash by a real signal, real trees
killed and measured (test_limits.py), a real executor recycled on its own measured growth
(test_sandbox.py), a real import failure (test_delivery.py), a real reload (test_dev.py). Each
decision the pool makes from them is tested here, once.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import orjson
import pytest
from support.fake_executor import MB, Clock, FakeExecutors, Trees

import config
from common.vocabulary import FailureKind
from executor.protocol import Run, Stop
from supervisor import settings as settings_mod
from supervisor.model import Claim, Task
from supervisor.pool.executors import describe_exit
from supervisor.pool.pool import START_TIMEOUT, Pool
from supervisor.pool.slots import SlotState
from supervisor.store.journal import new_key

QUIET = {"task_error_sleep": 0, "task_time_limit": 0, "task_cpu_limit": 0, "task_memory_limit_mb": 0,
         "task_limits": {}, "max_tasks_per_executor": 0, "executor_memory_growth_mb": 0,
         "task_log_max_bytes": 0, "limit_check_interval": 1.0}


class Rig:
    """A started Pool of ``size`` fake executors and what it handed on."""

    def __init__(self, tmp_path, size: int = 1, **settings: Any) -> None:
        base = settings_mod.load(config, tmp_path, {"server_url": "http://127.0.0.1:9/api"}, environ={})
        self.settings = base.overridden("test", **{**QUIET, **settings})
        self.fakes = FakeExecutors()
        self.clock = Clock()
        self.trees = Trees()
        self.results: list[tuple[Claim, bool, bytes, FailureKind | None, float]] = []
        self.pool = Pool(size, {}, self.settings, lambda *result: self.results.append(result),
                         start=self.fakes, monitor=self.trees, clock=self.clock)
        self.pool.start()

    def turn(self) -> None:
        """One turn of the arbiter's loop, as far as the pool goes (arbiter.turn's order)."""
        self.pool.serve(0)
        self.pool.check_limits()
        self.pool.maintain()

    def slot(self, index: int = 0):
        return self.pool.slots[index]

    def up(self, index: int = 0, **ready: Any):
        ex = self.fakes.of(index)
        ex.ready(**ready)
        self.turn()
        assert self.slot(index).state(self.clock()) is SlotState.IDLE
        return ex

    def run(self, task_id: str = "t-1", task_type: str = "echo", params: Any = None) -> Claim:
        claim = Claim(new_key(), Task(id=task_id, task_type=task_type, params=params or {"x": 1}))
        assert self.pool.dispatch(claim)
        return claim


@pytest.fixture
def rig(tmp_path):
    rigs: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rigs.append(Rig(tmp_path, **kwargs))
        return rigs[-1]
    yield make
    for r in rigs:
        r.pool.stop(grace=0)
        r.fakes.close()


@pytest.fixture
def pool_log(caplog):
    caplog.set_level(logging.DEBUG, logger="hive")
    return lambda: "\n".join(r.getMessage() for r in caplog.records)


# ---- a task's round trip --------------------------------------------------------------------------


def test_the_done_frames_result_is_handed_on_byte_for_byte(rig):
    r = rig()
    ex = r.up()
    claim = r.run("t-1", "echo", {"text": "a\nb"})
    run = ex.received()[-1]
    assert isinstance(run, Run) and (run.id, run.task_type, run.params) == ("t-1", "echo", {"text": "a\nb"})
    assert run.scratch == str(r.settings.home / "scratch" / "0-1")
    assert r.slot().state(r.clock()) is SlotState.BUSY and not r.pool.dispatch(claim)
    raw = b'{ "b" : [1,2.50] ,"a":"\\u00e9\\n" }'  # not orjson's own spelling: never decoded on the way
    r.clock.advance(2.5)
    ex.done(raw, cpu=0.75)
    r.turn()
    assert r.results == [(claim, True, raw, None, 2.5)]
    assert r.slot().state(r.clock()) is SlotState.IDLE and r.slot().tasks_total == 1
    assert r.slot().idle_cpu == 0.75  # the next task's CPU baseline


def test_a_failed_task_keeps_its_kind_and_traceback_goes_to_the_log(rig, pool_log):
    r = rig()
    ex = r.up()
    claim = r.run()
    body = orjson.dumps({"error": "ValueError: no", "kind": "exception"})
    ex.done(body, ok=False, kind=FailureKind.EXCEPTION, traceback="Traceback ...\nValueError: no")
    r.turn()
    assert r.results == [(claim, False, body, FailureKind.EXCEPTION, 0.0)]
    assert "task 't-1' raised:\n    Traceback ...\n    ValueError: no" in pool_log()


def test_a_done_for_another_dispatch_and_an_unreadable_frame_are_dropped(rig, pool_log):
    r = rig()
    ex = r.up()
    r.run()
    ex.done(seq=999)
    ex.say_raw(b'{"op":"hello"}')
    r.turn()
    assert r.results == [] and r.slot().state(r.clock()) is SlotState.BUSY and ex.alive()
    assert "slot 0: result for an unknown dispatch 999 ignored" in pool_log()
    assert "sent a frame this worker cannot read (unknown op 'hello'); dropped" in pool_log()
    ex.done()
    r.turn()
    assert len(r.results) == 1  # the same executor goes on


def test_task_log_lines_carry_the_task_id_within_their_budget(rig, pool_log):
    r = rig(task_log_max_bytes=350)  # each line counts its text and ~100 bytes of prefix
    ex = r.up()
    r.run("t-1")
    for i in range(5):
        ex.log(f"line {i} " + "x" * 50, task_id="t-1")  # 157 bytes each: two fit
    ex.done()
    r.turn()
    log = pool_log()
    assert "task 't-1': line 1 " in log and "line 2 " not in log
    assert log.count("logged over TASK_LOG_MAX_BYTES=350") == 1
    assert "task 't-1': 3 log line(s) of 171 bytes dropped over TASK_LOG_MAX_BYTES=350" in log
    r.run("t-2")  # the budget is per task
    ex.log("again", task_id="t-2")
    r.turn()
    assert "task 't-2': again" in pool_log()


# ---- crashes and start failures -------------------------------------------------------------------

# Windows' signal module has no SIGKILL (and its exit codes are never negative): the number is named.
SIGKILL_HOW = f"killed by signal {'SIGKILL' if hasattr(signal, 'SIGKILL') else 9}"


# A real executor killed by a real signal: test_limits.py (segfault) and test_guest_worker.py.
@pytest.mark.parametrize("code, how", [
    (-11, "killed by signal SIGSEGV"),  # a crash of its own
    (-9, SIGKILL_HOW),  # killed from outside (was test_limits' test_executor_killed_from_outside)
    (3, "exit code 3"),  # os._exit in a task
])
def test_a_crash_fails_only_its_task_and_the_slot_gets_a_fresh_executor(rig, pool_log, code, how):
    r = rig(size=2)
    first, other = r.up(0), r.up(1)
    claim = r.run("t-1")
    assert r.pool.busy() == [r.slot(0)]
    first.crash(code)
    r.turn()
    assert [(c, ok, orjson.loads(raw), kind) for c, ok, raw, kind, _ in r.results] == [
        (claim, False, {"error": f"executor crashed: {how}", "kind": "crashed"}, FailureKind.CRASHED)]
    assert f"task 't-1' (echo) crashed its executor on slot 0 ({how}); starting a fresh executor" in pool_log()
    assert first.kills == 1  # its descendants may live on: the tree is killed too
    fresh = r.fakes.of(0)
    assert fresh is not first and fresh.generation == 2 and r.slot(0).state(r.clock()) is SlotState.STARTING
    assert r.fakes.of(1) is other and other.alive() and r.fakes.starts(1) == 1  # the other slot never noticed
    r.up(0)
    r.run("t-2")
    assert r.slot(0).running is not None


@pytest.mark.parametrize("code, how", [
    (None, "still running"),
    (-11, "killed by signal SIGSEGV"),
    (-9, SIGKILL_HOW),
    (-200, "killed by signal 200"),  # no such signal: its number
    (3, "exit code 3"),
    (15, "exit code 15"),  # Windows: psutil's kill (TerminateProcess) leaves 15, not a signal
    (0xC0000005, "access violation (exit code 0xC0000005)"),  # Windows' segfault
    (0xE0000001, "exit code 3758096385 (0xE0000001)"),
])
def test_how_an_executor_ended_is_named(code, how):
    assert describe_exit(code) == how


def test_an_idle_executor_that_dies_is_replaced_at_once(rig, pool_log):
    r = rig()
    first = r.up()
    first.crash(1)
    r.turn()
    assert "slot 0: idle executor died (exit code 1); starting a fresh one" in pool_log()
    assert r.results == [] and r.fakes.starts(0) == 2 and r.slot().spawn_failures == 0


def test_an_executor_whose_child_keeps_the_pipe_is_found_dead_by_the_os_check(rig, pool_log):
    r = rig()
    ex = r.up()
    r.run()
    ex.done(b"1")  # what it sent before it ended is handled first
    ex.crash(0, keep_pipe=True)
    r.turn()  # the Done arrives; the pipe stays open, so nothing else shows
    assert len(r.results) == 1 and r.fakes.starts(0) == 1
    r.clock.advance(1.0)  # LIMIT_CHECK_INTERVAL: the OS is asked
    r.pool.maintain()
    assert "slot 0: idle executor died (exit code 0)" in pool_log() and r.fakes.starts(0) == 2


def test_a_start_up_crash_is_retried_with_doubling_backoff_and_recovers(rig, pool_log):
    r = rig()
    delays = []
    for attempt in range(1, 10):
        r.fakes.of(0).crash(3)
        r.turn()
        slot = r.slot()
        assert slot.state(r.clock()) is SlotState.DOWN and slot.spawn_failures == attempt
        delays.append(slot.next_spawn - r.clock())
        starts = r.fakes.starts(0)
        r.clock.advance(delays[-1] - 0.01)
        r.pool.maintain()
        assert r.fakes.starts(0) == starts  # not before its time
        r.clock.advance(0.01)
        r.pool.maintain()
        assert r.fakes.starts(0) == starts + 1
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert "slot 0: executor failed to start (died during start-up, exit code 3); attempt 2, retrying in 1.0 s" \
        in pool_log()
    assert r.pool.last_start_error == "died during start-up, exit code 3"
    r.up()
    assert r.slot().spawn_failures == 0 and "slot 0: executor up again after 9 failed start(s)" in pool_log()


def test_a_start_that_raises_is_retried_later(rig, pool_log):
    r = rig()
    r.fakes.of(0).crash(3)
    r.fakes.failures.append(OSError(24, "Too many open files"))
    r.turn()
    r.clock.advance(0.5)
    r.pool.maintain()  # this start raises
    assert r.pool.last_start_error == "cannot start: [Errno 24] Too many open files"
    assert "attempt 2, retrying in 1.0 s" in pool_log() and r.slot().state(r.clock()) is SlotState.DOWN
    r.clock.advance(1.0)
    r.pool.maintain()
    assert r.fakes.of(0).generation == 3  # the failed start used up generation 2: its token is never reused


def test_an_executor_not_ready_by_the_start_timeout_is_killed_and_retried(rig, pool_log):
    r = rig()
    hung = r.fakes.of(0)
    r.clock.advance(START_TIMEOUT)
    r.turn()
    assert hung.kills == 0 and r.slot().state(r.clock()) is SlotState.STARTING  # at the limit is not over it
    r.clock.advance(0.01)
    r.turn()
    assert hung.kills == 1 and r.slot().state(r.clock()) is SlotState.DOWN
    assert "slot 0: executor failed to start (not ready after 60 s); attempt 1, retrying in 0.5 s" in pool_log()
    r.clock.advance(0.5)
    r.pool.maintain()
    assert r.fakes.of(0) is not hung
    r.up()


def test_an_executor_that_cannot_import_the_registry_is_killed_and_retried(rig, pool_log):
    r = rig()
    ex = r.fakes.of(0)
    ex.import_failed("Traceback (most recent call last):\nImportError: broken on purpose")
    r.turn()
    assert ex.kills == 1 and r.slot().state(r.clock()) is SlotState.DOWN
    assert r.pool.last_start_error == "task registry import failed"
    assert "slot 0: executor cannot import the task registry:\n    Traceback (most recent call last):\n" \
           "    ImportError: broken on purpose" in pool_log()
    assert "attempt 1, retrying in 0.5 s" in pool_log()
    assert not r.pool.any_up(r.clock()) and r.pool.ready_count(r.clock()) == 0


def test_a_broken_pipe_at_dispatch_gives_the_task_back(rig, pool_log):
    r = rig()
    ex = r.up()
    ex.end.close()  # gone, its end of the pipe with it, before the pool noticed
    claim = Claim(new_key(), Task(id="t", task_type="echo", params={}))
    assert not r.pool.dispatch(claim)
    assert "slot 0: executor pipe broken before dispatch" in pool_log()
    assert r.results == [] and r.fakes.starts(0) == 2


# ---- limits ---------------------------------------------------------------------------------------


def test_a_hung_task_past_its_wall_time_is_killed_and_the_slot_restarted(rig, pool_log):
    r = rig(task_time_limit=5)
    ex = r.up()
    claim = r.run()
    r.clock.advance(5.0)
    r.turn()
    assert r.results == [] and ex.alive()  # at the limit is not over it
    r.clock.advance(0.25)
    r.turn()
    assert [(c, orjson.loads(raw), kind) for c, _, raw, kind, _ in r.results] == [
        (claim, {"error": "time limit of 5 s reached (5.2 s wall time)", "kind": "time_limit"},
         FailureKind.TIME_LIMIT)]
    assert ex.kills == 1 and r.fakes.of(0) is not ex
    assert "task 't-1' (echo) on slot 0: time limit of 5 s reached (5.2 s wall time); killed its 1 process(es) in" \
        in pool_log()
    assert r.trees.reads == []  # no memory or CPU limit: no tree is read


def test_a_per_type_limit_overrides_the_global_one(rig):
    # worker.toml's [task_limits.TYPE] reaching these settings: test_unit_settings.py.
    r = rig(size=3, task_time_limit=5, task_limits={"slow": {"time": 0}, "spin": {"time": 1}})
    slow, spin, plain = r.up(0), r.up(1), r.up(2)
    r.run("s", task_type="slow")
    quick = r.run("q", task_type="spin")
    r.run("p", task_type="echo")
    r.clock.advance(1.25)
    r.turn()
    assert [(c, orjson.loads(raw)["error"]) for c, _, raw, _, _ in r.results] == [
        (quick, "time limit of 1 s reached (1.2 s wall time)")]  # its own limit, under the global 5 s
    assert spin.kills == 1 and plain.alive() and slow.alive()
    r.clock.advance(4.0)
    r.turn()
    assert len(r.results) == 2 and plain.kills == 1  # the global limit for a type without its own
    r.clock.advance(3600)
    r.turn()
    assert len(r.results) == 2 and slow.alive()  # time 0: no limit for this type


def test_the_memory_limit_reads_the_whole_tree_every_check_interval(rig):
    r = rig(task_memory_limit_mb=100)
    ex = r.up()
    claim = r.run()
    r.trees.set(ex.pid, 150 * MB, 0.0, processes=3)
    r.pool.check_limits()
    assert [(c, orjson.loads(raw)["error"]) for c, _, raw, _, _ in r.results] == [
        (claim, "memory limit of 100 MB reached (150 MB in 3 process(es))")]
    assert r.trees.retained == [ex.pid]
    fresh = r.up()
    r.run("t-2")
    r.trees.set(fresh.pid, 150 * MB, 0.0)
    r.clock.advance(0.5)
    r.pool.check_limits()  # within LIMIT_CHECK_INTERVAL of the last reading: not read
    assert len(r.results) == 1 and r.trees.reads == [ex.pid]
    r.clock.advance(0.5)
    r.pool.check_limits()
    assert len(r.results) == 2 and r.trees.reads == [ex.pid, fresh.pid]


def test_the_cpu_limit_counts_from_the_executors_own_baseline(rig):
    r = rig(task_cpu_limit=5)
    ex = r.up(cpu=2.0)  # the executor's tree had used 2 s when it became idle
    r.run()
    r.trees.set(ex.pid, 10 * MB, 6.9)
    r.pool.check_limits()
    assert r.results == []  # 4.9 s of the task's own
    r.clock.advance(1.0)
    r.trees.set(ex.pid, 10 * MB, 7.25, processes=2)
    r.pool.check_limits()
    assert orjson.loads(r.results[0][2])["error"] == "CPU limit of 5 s reached (5.2 s CPU in 2 process(es))"
    assert r.results[0][3] is FailureKind.CPU_LIMIT


# ---- recycling, pauses, dev reload, shutdown ------------------------------------------------------


def test_an_executor_is_recycled_after_its_tasks_once_idle(rig, pool_log):
    r = rig(max_tasks_per_executor=2)  # 2 +-10% jitter is always 2
    ex = r.up()
    for i in range(2):
        r.run(f"t-{i}")
        ex.done()
        r.turn() if i == 0 else r.pool.serve(0)
    assert r.slot().retire == "ran 2 tasks (MAX_TASKS_PER_EXECUTOR)" and not r.slot().takes_work(r.clock())
    assert not r.pool.dispatch(Claim(new_key(), Task(id="t", task_type="echo", params={})))
    r.pool.maintain()
    assert ex.stopped and Stop() in ex.received()
    assert f"slot 0: recycling executor pid {ex.pid}: ran 2 tasks (MAX_TASKS_PER_EXECUTOR)" in pool_log()
    fresh = r.fakes.of(0)
    assert fresh is not ex and r.slot().retire is None and r.slot().tasks_done == 0 and r.slot().tasks_total == 2
    assert r.slot().spawn_failures == 0 and r.pool.last_start_error == ""  # a recycle is no failure


def test_an_executor_that_grew_is_recycled(rig, pool_log):
    r = rig(executor_memory_growth_mb=50)
    ex = r.up(rss=100 * MB)
    r.run()
    ex.done(rss=150 * MB)
    r.turn()
    assert r.fakes.of(0) is ex  # 50 MB is not over 50
    r.run()
    ex.done(rss=int(151.4 * MB))
    r.turn()
    assert r.fakes.of(0) is not ex
    assert f"recycling executor pid {ex.pid}: grew 51 MB over its start-up size (EXECUTOR_MEMORY_GROWTH_MB=50)" \
        in pool_log()


def test_a_failed_task_pauses_only_its_slot(rig, pool_log):
    r = rig(size=2, task_error_sleep=30)
    ex, _ = r.up(0), r.up(1)
    r.run()
    ex.done(b'{"error":"e","kind":"exception"}', ok=False, kind=FailureKind.EXCEPTION)
    r.turn()
    assert "slot 0: pausing 30 s after a failed task (TASK_ERROR_SLEEP)" in pool_log()
    assert r.slot(0).state(r.clock()) is SlotState.PAUSED and r.pool.ready_count(r.clock()) == 1
    assert r.pool.describe(r.clock())[0]["paused_seconds_left"] == 30.0
    r.clock.advance(30)
    assert r.pool.ready_count(r.clock()) == 2


def test_a_dev_reload_ends_pauses_and_replaces_every_executor_once_idle(rig, pool_log):
    r = rig(size=2, task_error_sleep=30)
    paused, busy = r.up(0), r.up(1)
    r.run("fails")
    paused.done(b'{"error":"e","kind":"exception"}', ok=False, kind=FailureKind.EXCEPTION)
    r.turn()
    running = r.run("runs")
    assert r.slot(1).running is not None and r.slot(1).running.claim is running
    r.clock.advance(10)
    r.pool.retire_all("reload: tasks.py changed")
    r.pool.clear_pauses("reload: tasks.py changed")
    assert "slot 0: pause after a failed task ended (20 s early): reload: tasks.py changed" in pool_log()
    r.pool.maintain()
    assert paused.stopped and r.fakes.of(0) is not paused  # idle: replaced now
    assert r.fakes.of(1) is busy and busy.alive()  # busy: its task finishes with the old code
    busy.done(b'"old"')
    r.turn()
    assert r.results[-1][2] == b'"old"' and busy.stopped and r.fakes.of(1) is not busy


def test_kill_running_kills_only_busy_executors_and_hands_their_claims_back(rig, pool_log):
    r = rig(size=2)
    busy, idle = r.up(0), r.up(1)
    claim = r.run()
    assert r.pool.kill_running("forced shutdown") == [claim]
    assert busy.kills == 1 and idle.alive() and r.results == []
    assert "task 't-1' (echo) on slot 0 killed: forced shutdown" in pool_log()


def test_stop_asks_every_executor_then_kills_it(rig):
    r = rig(size=2)
    a, b = r.up(0), r.up(1)
    r.pool.stop(grace=0)
    assert Stop() in a.received() and Stop() in b.received()
    assert a.kills == b.kills == 1 and all(s.executor is None for s in r.pool.slots) and r.trees.closed


def test_describe_shows_each_slots_state_and_task(rig):
    r = rig(size=2)
    ex = r.up(0)
    r.run("t-9")
    r.clock.advance(1.5)
    got = r.pool.describe(r.clock())
    assert got[0] == {"slot": 0, "state": SlotState.BUSY, "tasks_done": 0, "pid": ex.pid,
                      "task": {"id": "t-9", "task_type": "echo", "seconds": 1.5}, "paused_seconds_left": None}
    assert got[1]["state"] is SlotState.STARTING and got[1]["task"] is None
