"""The supervision loop without processes (issue 25.1-2): its lifecycle table, the claim-hold decision
over its inputs, and whole runs of the loop over fake parts on a fake clock (tests/support/fake_parts.py):
grace expiry, the second interrupt, a crash's result, the update hold, a lent claim."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading

import orjson
import pytest
from support.fake_parts import make_rig, real_updates, rig_settings, wait_until

from supervisor.hold import GateInputs, Notice, claim_hold
from supervisor.lifecycle import TRANSITIONS, Lifecycle, LifecycleError, Stage
from supervisor.store.journal import Journal
from supervisor.update.coordinator import TASK_TYPE as UPDATE_TASK
from supervisor.update.coordinator import Phase

# ---- the lifecycle ------------------------------------------------------------------------------


@pytest.mark.parametrize("start", list(Stage))
@pytest.mark.parametrize("to", list(Stage))
def test_the_stage_moves_only_along_the_table(start, to):
    life = Lifecycle(grace=10)
    life.stage = start  # a fixture's shortcut: the loop itself only ever calls enter()
    if to in TRANSITIONS[start]:
        life.enter(to, 0.0, "moved")
        assert life.stage is to
    else:
        with pytest.raises(LifecycleError):
            life.enter(to, 0.0, "moved")
        assert life.stage is start


def test_the_table_is_one_path_from_starting_to_stopped():
    stage, path = Stage.STARTING, [Stage.STARTING]
    while TRANSITIONS[stage]:
        (stage,) = TRANSITIONS[stage]
        path.append(stage)
    assert path == [Stage.STARTING, Stage.RUNNING, Stage.STOPPING, Stage.STOPPED] == list(Stage)


def test_each_move_is_one_log_line_and_stopping_starts_the_grace(caplog):
    life = Lifecycle(grace=10)
    caplog.set_level(logging.INFO, logger="hive.supervisor")
    life.enter(Stage.RUNNING, 100.0, "running: %d executor(s)", 2)
    assert life.grace_deadline is None and life.must_kill(1e9) is None  # no grace while running
    life.enter(Stage.STOPPING, 100.0, "stopping (%s)", "test")
    assert life.must_kill(110.0) is None and life.must_kill(110.5) == "SHUTDOWN_GRACE of 10 s ran out"
    assert not life.stopped.is_set()
    life.enter(Stage.STOPPED, 111.0, "stopped")
    assert life.stopped.is_set()
    assert caplog.messages == ["running: 2 executor(s)", "stopping (test)", "stopped"]


def test_the_first_signal_asks_for_a_stop_and_any_later_one_forces_it():
    life = Lifecycle(grace=10)
    signals: list[int] = []
    life.take_signals(signals)
    assert not life.stop_requested.is_set()
    signals.append(signal.SIGTERM)
    life.take_signals(signals)
    life.take_signals(signals)  # read again: still the one signal
    assert life.stop_reason == "signal SIGTERM" and not life.forced
    life.request_stop("later reason")  # the first reason stays
    assert life.stop_reason == "signal SIGTERM"
    signals.append(signal.SIGINT)
    life.take_signals(signals)
    assert life.forced and life.must_kill(0.0) == "second interrupt"


def test_two_signals_read_in_one_turn_stop_and_force_at_once():
    life = Lifecycle(grace=10)
    life.take_signals([signal.SIGINT, signal.SIGINT])
    assert life.stop_reason == "signal SIGINT" and life.forced


# ---- the claim-hold decision --------------------------------------------------------------------

def _disk_ok() -> str | None:
    return None


def _inputs(**changes) -> GateInputs:
    base = GateInputs(now=1000.0, stopping=False, update_hold=None, disk_problem=_disk_ok, outbox_full=False,
                      outbox_full_said=False, paused=None, ready=2, down_since=None, lent_at=float("-inf"),
                      lend_every=600.0, lending=False, backoff_left=0.0, cannot_run=None)
    return dataclasses.replace(base, **changes)


def _disk_full() -> str | None:
    return "disk full: ENOSPC"


def _untouchable() -> str | None:
    raise AssertionError("the disk was probed though a stronger hold decided")


@pytest.mark.parametrize("changes, hold", [
    ({}, None),
    ({"stopping": True, "update_hold": "draining for an update", "disk_problem": _untouchable}, "stopping"),
    ({"update_hold": "draining for an update", "disk_problem": _untouchable, "outbox_full": True},
     "draining for an update"),
    ({"disk_problem": _disk_full, "outbox_full": True, "paused": "on battery"}, "disk full: ENOSPC"),
    ({"outbox_full": True, "paused": "on battery"}, "outbox full"),
    ({"paused": "on battery"}, "paused: on battery"),
])
def test_holds_in_order_of_precedence(changes, hold):
    answer = claim_hold(_inputs(**changes))
    assert answer.hold == hold and answer.not_claiming == hold
    assert answer.offer == 2 and not answer.lending  # the gate is told the idle executors; the hold decides


def test_a_full_outbox_is_said_once_and_its_end_once():
    full = claim_hold(_inputs(outbox_full=True))
    assert full.notices == (Notice.OUTBOX_FULL,) and full.outbox_full_said
    again = claim_hold(_inputs(outbox_full=True, outbox_full_said=True))
    assert again.notices == () and again.outbox_full_said
    # A stronger hold meanwhile neither repeats it nor ends it.
    stopping = claim_hold(_inputs(stopping=True, outbox_full=False, outbox_full_said=True))
    assert stopping.notices == () and stopping.outbox_full_said
    below = claim_hold(_inputs(outbox_full=False, outbox_full_said=True))
    assert below.notices == (Notice.OUTBOX_OK,) and not below.outbox_full_said and below.hold is None


def test_the_lend_offers_one_slot_and_is_said_when_it_begins():
    down = dict(ready=0, down_since=400.0, cannot_run="none of its 2 executor(s) could start for 600 s")
    lent = claim_hold(_inputs(**down))
    assert lent.lending and lent.offer == 1 and lent.hold is None and lent.not_claiming is None
    assert lent.notices == (Notice.LENDING,)
    assert claim_hold(_inputs(**down, lending=True)).notices == ()  # still lent: said once
    held = claim_hold(_inputs(**down, paused="on battery"))
    assert not held.lending and held.offer == 0  # a hold lends nothing
    early = claim_hold(_inputs(**down, lent_at=900.0))  # lent 100 s ago
    assert not early.lending and early.not_claiming == (
        "this worker cannot run tasks: none of its 2 executor(s) could start for 600 s; one claim per 600 s")


@pytest.mark.parametrize("changes, why", [
    ({"backoff_left": 4.2}, "backing off after server trouble: next try in 4 s"),
    ({"ready": 0}, "no idle executor (all busy, starting or pausing after a failure)"),
    ({"ready": 0, "cannot_run": "broken"}, "this worker cannot run tasks: broken; one claim per 600 s"),
    ({"ready": 1}, None),
])
def test_why_the_claim_thread_waits_though_nothing_holds(changes, why):
    answer = claim_hold(_inputs(**changes))
    assert answer.hold is None and answer.not_claiming == why


# ---- whole runs of the loop over fake parts -----------------------------------------------------

@pytest.fixture
def rigs(tmp_path):
    made = []

    def make(**kw):
        home = tmp_path / f"home{len(made)}"
        home.mkdir()
        if "env" in kw:
            kw["settings"] = rig_settings(home, **kw.pop("env"))
        made.append(make_rig(home, **kw))
        return made[-1]

    yield make
    for rig in made:
        rig.close()


def _claim(rig, task_id, task_type="echo"):
    def action():
        assert rig.claimer.claim(task_id, task_type), f"the gate let no claim out for {task_id}"
    return action


def _idle():
    pass


def test_a_stop_waits_for_the_running_task_and_kills_it_when_the_grace_runs_out(rigs, caplog):
    rig = rigs()
    stop_at = []
    rig.pool.then(_idle, _claim(rig, "t1"), lambda: (stop_at.append(rig.clock()), rig.signal(signal.SIGINT)))
    caplog.set_level(logging.INFO, logger="hive")
    assert rig.arbiter.run(signals=False) == 0
    assert rig.pool.killed == [("t1", "SHUTDOWN_GRACE of 10 s ran out")]
    waited = rig.clock() - stop_at[0]
    assert 10 <= waited <= 10 + 2 * rig.arbiter.settings.limit_check_interval, waited
    line = next(m for m in caplog.messages if m.startswith("stopping ("))
    assert line == ("stopping (signal SIGINT): no more claims; 1 task(s) get up to 10 s to finish; "
                    "a second Ctrl+C (or SIGTERM) kills them now")
    assert "1 task(s) killed (SHUTDOWN_GRACE of 10 s ran out); they will be reported interrupted at next start" \
        in caplog.messages
    assert rig.arbiter.state is Stage.STOPPED and rig.arbiter.life.stopped.is_set() and rig.pool.stopped
    assert [key for key, task, _ in Journal(rig.home).leftovers() if task] != []  # t1's claim: reported next start
    status = orjson.loads((rig.home / "status.json").read_bytes())
    assert status["state"] == "stopped" and status["not_claiming_because"] == "stopped"


def test_a_second_interrupt_kills_the_running_task_at_once(rigs, caplog):
    rig = rigs()
    rig.pool.then(_idle, _claim(rig, "t1"), lambda: rig.signal(signal.SIGINT), _idle,
                  lambda: (stop_at.append(rig.clock()), rig.signal(signal.SIGTERM)))
    stop_at = []
    caplog.set_level(logging.INFO, logger="hive")
    assert rig.arbiter.run(signals=False) == 0
    assert rig.pool.killed == [("t1", "second interrupt")]
    assert rig.clock() - stop_at[0] < 1  # in the turn that read it, not after the grace
    assert "1 task(s) killed (second interrupt); they will be reported interrupted at next start" in caplog.messages


def test_a_stop_ends_as_soon_as_the_last_running_task_is_answered(rigs):
    rig = rigs()
    rig.pool.then(_idle, _claim(rig, "t1"), lambda: rig.arbiter.request_stop("test over"), _idle,
                  lambda: rig.pool.finish("t1"))
    assert rig.arbiter.run(signals=False) == 0
    assert rig.pool.killed == [] and [t for t, _ in rig.submitter.handed] == ["t1"]
    assert not rig.pool.script and rig.pool.turns == 5  # no turn after the answer


def test_a_crashed_executors_task_fails_and_its_result_reaches_the_outbox(rigs, caplog):
    rig = rigs()
    rig.pool.then(_idle, _claim(rig, "t1"), lambda: rig.pool.crash("t1"),
                  lambda: rig.arbiter.request_stop("test over"))
    caplog.set_level(logging.INFO, logger="hive")
    assert rig.arbiter.run(signals=False) == 0
    (kept,) = sorted((rig.home / "outbox").glob("*.json"))
    body = orjson.loads(kept.read_bytes())
    assert body["task_id"] == "t1" and body["worker_id"] == "w-test" and body["status"] == "failure"
    assert body["result"]["kind"] == "crashed" and body["result"]["error"].startswith("executor crashed:")
    assert rig.arbiter.health.kinds == {"crashed": 1}
    assert any(m.startswith("task 't1' (echo) failed in ") and "kind crashed" in m for m in caplog.messages)
    assert "stopped; 1 result(s) wait in the outbox for the next start (1 persisted at shutdown)" in caplog.messages
    assert not any(task for _, task, _ in Journal(rig.home).leftovers())  # answered: nothing to report next start


def test_an_update_hold_keeps_claims_in_until_it_lifts(rigs):
    rig = rigs()
    seen = {}

    def hold():
        rig.updates.holding = "draining for an update"

    def while_held():
        seen["claimed"] = rig.claimer.claim("t1")
        seen["because"] = rig.arbiter.snapshot().not_claiming

    def lift():
        rig.updates.holding = None
    rig.pool.then(_idle, _claim(rig, "u1", UPDATE_TASK), hold, while_held, lift, _claim(rig, "t2"),
                  lambda: rig.arbiter.request_stop("test over"), lambda: rig.pool.finish("t2"))
    assert rig.arbiter.run(signals=False) == 0
    assert [c.task.id for c in rig.updates.received] == ["u1"]  # update tasks go to the updater, not the pool
    assert seen == {"claimed": False, "because": "draining for an update"}
    assert [t for t, _ in rig.submitter.handed] == ["t2"]


def test_in_a_turn_the_drain_counts_claims_only_while_no_claim_can_be_taken(rigs):
    """Issue 22.6 with the real UpdateCoordinator: one turn after the claim thread handed over an
    update, when the drain counts what is in flight, a claim thread asking for a slot gets none.
    (It replaces a test that patched a real Arbiter's pool and updater.)"""
    seen: list[bool] = []
    prepared = threading.Event()

    def watch(worker):
        def in_flight():
            if rig.updates.phase is Phase.DRAINING:  # the drain's count (receive's is for its log line)
                with rig.arbiter.gate.cond:
                    seen.append(rig.arbiter.gate.may_claim())
            return worker.in_flight()
        return dataclasses.replace(worker, in_flight=in_flight)

    def prepare(params):
        prepared.set()
        return None  # "already running this version"
    # A throwaway key: with none trusted (config.py trusts none) an update is refused at once.
    rig = rigs(env={"HIVE_UPDATE_ROOT_KEYS": "Gtt6yuQClBCdZBFXnucwWGDkybjhgRtcETZEhCEWv3I="},
               updates=real_updates(prepare, watch))
    arbiter = rig.arbiter
    rig.pool.start()
    arbiter.update_gate(rig.clock())  # the turn before: claiming, two slots free
    assert rig.claimer.claim("u", UPDATE_TASK)
    arbiter.turn(rig.clock())
    assert rig.updates.phase is Phase.PREPARING  # nothing was running: drained in this turn
    assert seen == [False]
    assert arbiter.gate.hold == "draining for an update" and not arbiter.gate.acquire(timeout=0)
    wait_until(prepared.is_set)
    wait_until(lambda: not rig.updates.prepared.empty())
    arbiter.turn(rig.clock())  # takes the outcome: already running, answered, claiming resumes
    assert [t for t, _ in rig.submitter.handed] == ["u"] and arbiter.gate.hold is None


def test_a_worker_whose_executors_never_start_is_lent_one_claim_per_interval(rigs, caplog):
    rig = rigs(env={"HIVE_NO_EXECUTOR_CLAIM_INTERVAL": "30"}, starts=False)
    claimed_at = []

    def try_claim():
        if rig.claimer.claim(f"t{len(claimed_at)}"):
            claimed_at.append(rig.clock())
    rig.pool.then(*[try_claim] * 75, lambda: rig.arbiter.request_stop("test over"))
    caplog.set_level(logging.INFO, logger="hive")
    assert rig.arbiter.run(signals=False) == 0
    assert len(claimed_at) == 2 and claimed_at[1] - claimed_at[0] >= 30, claimed_at
    assert claimed_at[0] - 1000.0 >= 30  # down since the first turn, on the fake clock from 1000
    for task_id, raw in rig.submitter.handed:
        result = orjson.loads(raw)["result"]
        assert result["kind"] == "exception" and result["error"].startswith(
            "this worker cannot run tasks: none of its 2 executor(s) could start for "), (task_id, result)
        assert "(last error: task registry import failed)" in result["error"]
    lends = [m for m in caplog.messages if m.startswith("no executor could start for ")]
    assert len(lends) == 2 and lends[0].endswith("next in 30 s")


def test_one_task_that_breaks_the_supervision_loop_fails_alone(rigs):
    """An exception while placing one claimed task (here from the pool's dispatch) fails that task
    with kind exception; the next claim is still placed."""
    rig = rigs()

    def dispatch_error(claim):
        if claim.task.id == "bad":
            raise RecursionError("maximum recursion depth exceeded")
    rig.pool.dispatch_error = dispatch_error
    rig.pool.start()
    rig.arbiter.update_gate(rig.clock())
    assert rig.claimer.claim("bad") and rig.claimer.claim("good")
    rig.arbiter.take_claims()
    ((task_id, body),) = rig.submitter.handed
    result = orjson.loads(body)
    assert task_id == "bad" and result["status"] == "failure" and result["result"]["kind"] == "exception"
    assert "RecursionError" in result["result"]["error"]
    assert rig.pool.running("good").index == 0


def test_a_limits_entry_for_a_task_type_not_in_the_registry_is_a_warning_at_start(rigs, caplog):
    """Issue 23.2: a TASK_LIMITS entry for a type not in TASK_REGISTRY (a typo) never applies; the
    start says so, once per such type (which types: test_unit_settings.py's unknown_limit_types)."""
    rig = rigs(env={"HIVE_TASK_LIMITS": '{"echo": {"time": 1}, "ecoh": {"time": 5}}'},
               registry=frozenset({"echo", "prom_pars"}))  # prom_pars: config.py's own entry
    rig.pool.then(lambda: rig.arbiter.request_stop("test over"))
    caplog.set_level(logging.INFO, logger="hive")
    assert rig.arbiter.run(signals=False) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "TASK_LIMITS" in r.getMessage()]
    assert warned == ["TASK_LIMITS has an entry for 'ecoh', which is not in TASK_REGISTRY: its limits never apply "
                      "(a typo, or a task that was removed?)"]
