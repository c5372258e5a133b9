"""The pool's pure parts, without a process or a socket: the supervisor <-> executor frames,
the limit decision, slot states and transitions, and how a task's outcome becomes a Done frame."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from common.vocabulary import FailureKind, failure
from executor import process
from executor.api import TaskFailure
from executor.protocol import (
    Done,
    ImportFailed,
    Log,
    ProtocolError,
    Ready,
    Run,
    Stop,
    decode_from_executor,
    decode_to_executor,
)
from supervisor.model import Claim, Task
from supervisor.pool.limits import MB, Measured, breach, needs_measuring
from supervisor.pool.slots import MAX_SPAWN_DELAY, Running, Slot, SlotState, retire_reason, spawn_delay

# ---- frames ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [
    Run(1, "t-1", "echo", {"text": "a\nb", "deep": [{"x": None}]}, "/s/0-1", "/d/echo"),
    Run(2**40, {"composite": [1, "id"]}, "echo", None, "", ""),  # ids are any JSON; params checked later
    Run(3, 7, "echo", [1, 2], "s", "d"),
])
def test_run_round_trip(frame):
    assert decode_to_executor(frame.encode()) == frame


def test_stop_round_trip_and_wire():
    assert decode_to_executor(Stop().encode()) == Stop()
    assert orjson.loads(Stop().encode()) == {"op": "stop"}


@pytest.mark.parametrize("frame", [
    Ready(123456, 0.25),
    ImportFailed("Traceback (most recent call last):\n  ...\nImportError: no"),
    Log(20, "task.echo", "a line", "t-1"),
    Log(30, "task.print", "between tasks", None),
    Done(5, True, b'{"a":"x\\ny","b":[1,2]}', 10 * MB, 1.5),
    Done(6, True, b"null", 1, 0.0),
    Done(7, False, orjson.dumps(failure("ValueError: no", FailureKind.EXCEPTION)), 1, 2.0,
         FailureKind.EXCEPTION, "Traceback ...\nValueError: no\n"),
])
def test_executor_frames_round_trip(frame):
    assert decode_from_executor(frame.encode()) == frame


def test_done_wire_carries_only_what_is_read():
    data = Done(9, False, b'{"error":"e","kind":"crashed"}', 100, 3.0, FailureKind.CRASHED).encode()
    head, _, raw = data.partition(b"\n")
    assert orjson.loads(head) == {"op": "done", "seq": 9, "ok": False, "rss": 100, "cpu": 3.0, "kind": "crashed"}
    assert raw == b'{"error":"e","kind":"crashed"}'  # forwarded to the server as it is


def test_ready_wire():
    assert orjson.loads(Ready(5, 1.0).encode()) == {"op": "ready", "rss": 5, "cpu": 1.0}


def test_each_direction_reads_only_its_own_frames():
    with pytest.raises(ProtocolError, match="unknown op 'run'"):
        decode_from_executor(Run(1, 1, "t", {}, "", "").encode())
    with pytest.raises(ProtocolError, match="unknown op 'ready'"):
        decode_to_executor(Ready(1, 1.0).encode())


@pytest.mark.parametrize("data, needle", [
    (b"", "not JSON"),
    (b"{not json", "not JSON"),
    (b"[1,2]", "JSON list, not an object"),
    (b'"done"', "JSON str"),
    (b"{}", "unknown op None"),
    (b'{"op":"hello"}', "unknown op 'hello'"),
    (b'{"op":"ready","cpu":1.0}', "without 'rss'"),
    (b'{"op":"ready","rss":"1","cpu":1.0}', "'rss' is str"),
    (b'{"op":"ready","rss":true,"cpu":1.0}', "'rss' is bool"),
    (b'{"op":"ready","rss":1,"cpu":"x"}', "'cpu' is str"),
    (b'{"op":"ready","rss":1,"cpu":false}', "'cpu' is bool"),
    (b'{"op":"import_error"}', "without 'error'"),
    (b'{"op":"log","level":"INFO","name":"n","msg":"m"}', "'level' is str"),
    (b'{"op":"log","level":20,"name":null,"msg":"m"}', "'name' is NoneType"),
    (b'{"op":"done","seq":1,"ok":true,"rss":1,"cpu":1.0}', "without a result"),
    (b'{"op":"done","seq":1,"ok":1,"rss":1,"cpu":1.0}\nnull', "'ok' is int"),
    (b'{"op":"done","ok":true,"rss":1,"cpu":1.0}\nnull', "without 'seq'"),
    (b'{"op":"done","seq":1,"ok":false,"rss":1,"cpu":1.0}\n{}', "failure without its kind"),
    (b'{"op":"done","seq":1,"ok":false,"rss":1,"cpu":1.0,"kind":"oops"}\n{}', "unknown failure kind 'oops'"),
    (b'{"op":"done","seq":1,"ok":true,"rss":1,"cpu":1.0,"traceback":3}\nnull', "'traceback' is int"),
])
def test_malformed_frames_from_an_executor(data, needle):
    with pytest.raises(ProtocolError, match=needle.replace("(", r"\(")):
        decode_from_executor(data)


@pytest.mark.parametrize("data, needle", [
    (b'{"op":"run","id":1,"task_type":"t","params":{},"scratch":"","data":""}', "without 'seq'"),
    (b'{"op":"run","seq":1,"task_type":"t","params":{},"scratch":"","data":""}', "without 'id'"),
    (b'{"op":"run","seq":1,"id":1,"task_type":2,"params":{},"scratch":"","data":""}', "'task_type' is int"),
    (b'{"op":"run","seq":1,"id":1,"task_type":"t","params":{},"data":""}', "without 'scratch'"),
])
def test_malformed_frames_to_an_executor(data, needle):
    with pytest.raises(ProtocolError, match=needle):
        decode_to_executor(data)


def test_failure_kinds_on_the_wire_are_the_fleets_strings():
    assert {k.value for k in FailureKind} == {
        "task_failed", "exception", "bad_params", "task_too_large", "unknown_task", "unserializable_result", "result_too_large",
        "time_limit", "memory_limit", "cpu_limit", "crashed", "interrupted", "update_failed"}
    assert f"{FailureKind.TIME_LIMIT}" == "time_limit" and FailureKind.CRASHED == "crashed"


def test_failure_body():
    body = failure("  two\n lines\tand  spaces ", FailureKind.TASK_FAILED)
    assert body == {"error": "two lines and spaces", "kind": "task_failed"}
    assert type(body["kind"]) is str  # a plain str: the body's kind may become a dict key
    assert failure("", FailureKind.CRASHED) == {"error": "crashed", "kind": "crashed"}
    assert len(failure("x" * 5000, FailureKind.EXCEPTION)["error"]) == 2000


# ---- the executor's outcome of one task -----------------------------------------------------------


def _raises_failure() -> None:
    raise TaskFailure("site answered 403")


def _raises() -> None:
    raise ValueError("boom")


REGISTRY = {
    "ok": lambda: {"status": "success", "data": [1]},
    "plain": lambda: 42,
    "status_failure": lambda: {"status": "failure", "message": "pushed back"},
    "task_failure": _raises_failure,
    "raises": _raises,
    "needs_x": lambda x: x,
    "unserializable": lambda: {1, 2},
    "big": lambda: "x" * 100,
}


@pytest.mark.parametrize("task_type, params, ok, kind, result", [
    ("ok", {}, True, None, [1]),
    ("plain", {}, True, None, 42),
    ("status_failure", {}, False, "task_failed", {"error": "pushed back", "kind": "task_failed"}),
    ("task_failure", {}, False, "task_failed", {"error": "site answered 403", "kind": "task_failed"}),
    ("raises", {}, False, "exception", {"error": "ValueError: boom", "kind": "exception"}),
    ("needs_x", {"y": 1}, False, "bad_params", None),
    ("needs_x", [1], False, "bad_params", {"error": "params must be a JSON object, got list", "kind": "bad_params"}),
    ("nope", {}, False, "unknown_task", {"error": "unknown task type 'nope'", "kind": "unknown_task"}),
    ("unserializable", {}, False, "unserializable_result", None),
    ("big", {}, False, "result_too_large", None),
])
def test_outcome_kind_matches_the_result_body(task_type, params, ok, kind, result):
    got_ok, raw, got_kind, tb = process._run_task(REGISTRY, Run(1, "t", task_type, params, "", ""), 50)
    body = orjson.loads(raw)
    assert got_ok is ok and got_kind == kind
    if not ok:
        assert body["kind"] == kind  # the Done frame's kind is the one the server reads
    if result is not None:
        assert body == result
    assert (tb is not None) == (task_type == "raises")


# ---- limit decisions ------------------------------------------------------------------------------

LIMITS = {"time": 10.0, "cpu": 5.0, "memory_mb": 100.0}


def _measured(rss_mb: float = 0, cpu: float = 0.0, processes: int = 1):
    return lambda: Measured(int(rss_mb * MB), cpu, processes)


def _never():
    raise AssertionError("measured although it could not decide")


def test_within_limits():
    assert breach(LIMITS, 9.9, _measured(99, 4.9)) is None
    assert breach(LIMITS, 10.0, _measured(100, 5.0)) is None  # at a limit is not over it


def test_time_limit_is_free_and_first():
    assert breach(LIMITS, 10.5, _never) == (FailureKind.TIME_LIMIT, "time limit of 10 s reached (10.5 s wall time)")
    assert breach(LIMITS, 10.5, None)[0] is FailureKind.TIME_LIMIT


def test_memory_limit():
    assert breach(LIMITS, 1.0, _measured(150.4, 9.0, 3)) == (
        FailureKind.MEMORY_LIMIT, "memory limit of 100 MB reached (150 MB in 3 process(es))")  # before CPU


def test_cpu_limit():
    assert breach(LIMITS, 1.0, _measured(10, 5.25, 2)) == (
        FailureKind.CPU_LIMIT, "CPU limit of 5 s reached (5.2 s CPU in 2 process(es))")


def test_turns_that_do_not_measure_decide_on_time_only():
    assert breach(LIMITS, 1.0, None) is None


def test_zero_turns_a_limit_off():
    off = {"time": 0.0, "cpu": 0.0, "memory_mb": 0.0}
    assert not needs_measuring(off)
    assert breach(off, 1e9, _never) is None
    assert breach({"time": 0.0, "cpu": 0.0, "memory_mb": 1.0}, 1e9, _measured(0.5, 1e9)) is None
    assert breach({"time": 0.0, "cpu": 1.0, "memory_mb": 0.0}, 1e9, _measured(1e6, 2.0))[0] is FailureKind.CPU_LIMIT


# ---- slot states ----------------------------------------------------------------------------------

EXECUTOR = object()  # a slot only asks whether it has one


def _running() -> Running:
    return Running(claim=None, seq=1, dispatched=0.0, limits=LIMITS, cpu_base=0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("slot, state", [
    (Slot(0), SlotState.DOWN),
    (Slot(0, ready=True, pause_until=99.0), SlotState.DOWN),  # nothing to run on, whatever else it says
    (Slot(0, executor=EXECUTOR), SlotState.STARTING),
    (Slot(0, executor=EXECUTOR, ready=True, running=_running()), SlotState.BUSY),
    (Slot(0, executor=EXECUTOR, ready=True, running=_running(), pause_until=99.0), SlotState.BUSY),
    (Slot(0, executor=EXECUTOR, ready=True, pause_until=10.1), SlotState.PAUSED),
    (Slot(0, executor=EXECUTOR, ready=True, pause_until=10.0), SlotState.IDLE),  # the pause is over
    (Slot(0, executor=EXECUTOR, ready=True), SlotState.IDLE),
])
def test_slot_state(slot, state):
    assert slot.state(10.0) is state
    assert slot.takes_work(10.0) is (state is SlotState.IDLE)


def test_a_slot_to_recycle_takes_no_work():
    slot = Slot(0, executor=EXECUTOR, ready=True, retire="ran 500 tasks")
    assert slot.state(0.0) is SlotState.IDLE and not slot.takes_work(0.0)


def test_slot_states_are_statuses_strings():
    assert orjson.loads(orjson.dumps([s.value for s in SlotState])) == ["down", "starting", "busy", "paused", "idle"]
    assert orjson.dumps({"state": SlotState.BUSY}) == b'{"state":"busy"}'


# ---- slot transitions -----------------------------------------------------------------------------


def _claimed(task_id: str = "t") -> Running:
    return Running(Claim("k", Task(id=task_id, task_type="echo", params={})), seq=1, dispatched=5.0, limits=LIMITS,
                   cpu_base=0.0)


def test_a_slots_life_through_its_transitions():
    slot = Slot(3, tasks_total=7)
    assert slot.launch(max_tasks=2) == 1 and slot.state(0.0) is SlotState.DOWN
    slot.started(SimpleNamespace(pid=42), now=10.0)  # type: ignore[arg-type]
    assert slot.state(10.0) is SlotState.STARTING and slot.started_at == 10.0
    slot.became_ready(rss=100 * MB, cpu=0.5, now=11.0)
    assert slot.state(11.0) is SlotState.IDLE and (slot.ready_rss, slot.idle_cpu) == (100 * MB, 0.5)
    running = _claimed()
    slot.dispatched(running)
    assert slot.state(11.0) is SlotState.BUSY and slot.running is running
    slot.finished(cpu=1.5)
    assert slot.state(12.0) is SlotState.IDLE and (slot.tasks_done, slot.tasks_total, slot.idle_cpu) == (1, 8, 1.5)
    slot.pause(30.0, now=12.0)
    assert slot.state(41.9) is SlotState.PAUSED and slot.state(42.0) is SlotState.IDLE
    slot.end_pause("reload", now=13.0)
    assert slot.state(13.0) is SlotState.IDLE
    slot.retire_when_idle("ran 2 tasks")
    assert not slot.takes_work(13.0)
    slot.recycled()
    assert slot.state(13.0) is SlotState.DOWN
    assert slot.launch(max_tasks=2) == 2  # a fresh executor's counts; the slot's total stays
    assert (slot.retire, slot.tasks_done, slot.tasks_total, slot.ready, slot.ready_rss) == (None, 0, 8, False, 0)


def test_losing_the_executor_gives_back_the_task_it_ran():
    slot = Slot(0, executor=EXECUTOR, ready=True)
    assert slot.crashed("exit code 1") is None and slot.state(0.0) is SlotState.DOWN
    running = _claimed()
    for lose in (lambda s: s.crashed("killed by signal SIGSEGV"), lambda s: s.killed_for_limit("time", 1, 2.0),
                 lambda s: s.killed_at_shutdown("forced")):
        slot = Slot(0, executor=EXECUTOR, ready=True, running=running)
        assert lose(slot) is running
        assert slot.executor is None and slot.running is None and slot.state(0.0) is SlotState.DOWN


def test_failed_starts_back_off_and_a_ready_executor_resets_the_count():
    slot = Slot(0)
    assert [slot.start_failed("no", now=100.0) for _ in range(3)] == [0.5, 1.0, 2.0]
    assert slot.next_spawn == 102.0 and slot.spawn_failures == 3 and slot.state(200.0) is SlotState.DOWN
    slot.started(SimpleNamespace(pid=1), now=103.0)  # type: ignore[arg-type]
    slot.became_ready(1, 0.0, now=104.0)
    assert slot.spawn_failures == 0


def test_spawn_delay_doubles_up_to_its_cap():
    assert [spawn_delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert spawn_delay(10**4) == MAX_SPAWN_DELAY  # no float overflow far down a long outage


@pytest.mark.parametrize("tasks_done, max_tasks, rss_mb, ready_mb, growth, reason", [
    (1, 2, 0, 0, 0, None),
    (2, 2, 0, 0, 0, "ran 2 tasks (MAX_TASKS_PER_EXECUTOR)"),
    (5, 0, 0, 0, 0, None),  # 0: never recycled by count
    (1, 2, 150, 100, 50, None),  # growing by the limit is not over it
    (1, 2, 151, 100, 50, "grew 51 MB over its start-up size (EXECUTOR_MEMORY_GROWTH_MB=50)"),
    (2, 2, 151, 100, 50, "grew 51 MB over its start-up size (EXECUTOR_MEMORY_GROWTH_MB=50)"),  # growth named first
    (1, 2, 151, 0, 50, None),  # no start-up size known: no base to grow from
    (1, 2, 900, 100, 0, None),  # 0: growth off
])
def test_retire_reason(tasks_done, max_tasks, rss_mb, ready_mb, growth, reason):
    assert retire_reason(tasks_done, max_tasks, rss_mb * MB, ready_mb * MB, growth) == reason


def test_a_tasks_log_budget_counts_each_lines_prefix_and_starts_over():
    slot = Slot(0)
    assert [slot.charge_log(100, 450) for _ in range(3)] == [True, True, False]  # 200 bytes a line with its prefix
    assert not slot.charge_log(1, 450)
    assert slot.end_log_budget() == (2, 101)
    assert slot.charge_log(100, 450) and slot.end_log_budget() == (0, 0)
