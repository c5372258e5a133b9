"""The claim gate's ordering against a drain (issue 22.6): once an update task is claimed, no
other claim can be taken, whatever the arbiter's loop is doing, and the drain counts what is
outstanding only while the gate is held. The gate itself here; a turn of an Arbiter with its real
ClaimGate and UpdateCoordinator is in test_unit_arbiter.py."""

from __future__ import annotations

from supervisor.model import Claim, Task
from supervisor.net.claimer import ClaimGate
from supervisor.store.journal import new_key
from supervisor.update.coordinator import TASK_TYPE as UPDATE_TASK


def _claim(task_id: str, task_type: str) -> Claim:
    return Claim(new_key(), Task(id=task_id, task_type=task_type, params={"url": "x"}))


def test_an_update_claim_holds_the_gate_until_the_arbiter_has_taken_it():
    gate = ClaimGate(on_claim=lambda: None, exclusive=frozenset({UPDATE_TASK}))
    gate.set_ready(2, None)
    assert gate.acquire(timeout=0)
    gate.release(_claim("u", UPDATE_TASK))  # the claim thread hands the update over...
    assert not gate.acquire(timeout=0)  # ... and its very next acquire already waits
    gate.set_ready(2, None)  # a turn that has not taken the claim yet cannot lift it
    assert not gate.acquire(timeout=0)
    assert gate.take().task.id == "u"
    gate.set_ready(2, "draining for an update")  # the arbiter's hold takes over, no gap
    assert not gate.acquire(timeout=0)
    gate.set_ready(2, None)  # the update was refused at once: claiming resumes
    assert gate.acquire(timeout=0)


def test_other_claims_never_hold_the_gate():
    gate = ClaimGate(on_claim=lambda: None, exclusive=frozenset({UPDATE_TASK}))
    gate.set_ready(3, None)
    assert gate.acquire(timeout=0)
    gate.release(_claim("t", "echo"))
    assert gate.acquire(timeout=0)


def test_a_worker_with_no_executor_up_is_lent_one_claim_per_interval():
    from supervisor.hold import lend_a_claim

    assert not lend_a_claim(None, 1e9, 600)  # an executor is up
    assert not lend_a_claim(599, 1e9, 600)  # not down long enough
    assert lend_a_claim(600, float("inf"), 600)  # the first, after 10 min down
    assert not lend_a_claim(5000, 599, 600)  # the next one only an interval after the last
    assert lend_a_claim(5000, 600, 600)
    assert not lend_a_claim(5000, float("inf"), 0)  # 0: never


def test_a_lent_slot_is_used_up_by_the_claim_it_brings():
    gate = ClaimGate(on_claim=lambda: None)
    gate.set_ready(1, None)  # lent
    assert gate.acquire(timeout=0)
    gate.release(_claim("t", "echo"))
    assert gate.take(close=True).task.id == "t"
    assert not gate.acquire(timeout=0)  # no window for a second claim before the next turn
