"""The watchdog (issue 24.3, supervisor/observe/liveness.py): a worker whose supervision, claim or submit
loop stops turning writes every thread's stack to its log and exits with EXIT_WEDGED; started
again, it reports the task it had claimed (nothing claimed is lost).

The wedge is real: the test-only hook HIVE_INTERNAL_TEST_WEDGE makes the named loop block forever
at its next turn, in a real worker with real executors and a real dev server."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from conftest import result_of, wait_for

from supervisor.observe import liveness

FAST = {"HIVE_WATCHDOG_GRACE": "2", "HIVE_GET_TASK_TIMEOUT": "2", "HIVE_SUBMIT_TIMEOUT": "2"}


def _settings(**values: float) -> types.SimpleNamespace:
    base = {"watchdog_grace": 120.0, "get_task_timeout": 20.0, "no_task_sleep": 180.0, "submit_timeout": 60.0,
            "time_error_sleep": 180.0}
    base.update(values)
    return types.SimpleNamespace(**base)


def test_bounds_come_from_each_loop_s_own_deadlines() -> None:
    got = liveness.bounds(_settings(), idle_tick=1.0)
    assert got == {"supervision": 121.0, "claim": pytest.approx(20 + 198 + 120), "submit": 60 + 180 + 120}
    # A fast-polling worker with short timeouts gets short bounds; a zero backoff still waits 1 s.
    fast = liveness.bounds(_settings(watchdog_grace=2, get_task_timeout=1, no_task_sleep=0, submit_timeout=1,
                                     time_error_sleep=0), idle_tick=1.0)
    assert fast == {"supervision": 3.0, "claim": 3.0, "submit": 4.0}


def test_overdue_names_the_first_live_loop_past_its_bound() -> None:
    limits = {"supervision": 10.0, "claim": 20.0}
    beats = {"supervision": 100.0, "claim": 100.0}
    alive = {"supervision": True, "claim": True}
    assert liveness.overdue(beats, limits, alive, now=109.0) is None
    assert liveness.overdue(beats, limits, alive, now=111.0) == ("supervision", 11.0)
    assert liveness.overdue({"claim": 100.0}, limits, alive, now=125.0) == ("claim", 25.0)
    # A loop whose thread has ended (the worker is stopping) is not wedged.
    assert liveness.overdue(beats, limits, {"supervision": True, "claim": False}, now=125.0) == ("supervision", 25.0)
    assert liveness.overdue(beats, {"claim": 20.0}, {"claim": False}, now=125.0) is None
    # After a suspend (the PC slept) the bound counts from the resume, not from the last beat.
    assert liveness.overdue(beats, limits, alive, now=1000.0, floor=995.0) is None
    assert liveness.overdue(beats, limits, alive, now=1000.0, floor=989.0) == ("supervision", 11.0)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("loop", [liveness.SUPERVISION, liveness.CLAIM, liveness.SUBMIT])
def test_a_wedged_loop_restarts_the_worker_and_loses_no_claim(server, start_worker, tmp_path: Path,
                                                              loop: str) -> None:
    trigger = tmp_path / "wedge"
    env = dict(FAST, **{liveness.WEDGE_ENV: str(trigger)})
    home = tmp_path / "home"
    w = start_worker(server.url, env=env, home=home)
    task = server.enqueue("sleep_record", {"seconds": 120})
    wait_for(lambda: f"claimed task {task!r}" in w.log(), 30, what="the task to be claimed")
    trigger.write_text(loop, encoding="ascii")
    assert w.wait(60) == liveness.EXIT_WEDGED, w.console()
    log = w.log()
    assert f"wedging the {loop} loop" in log
    assert f"CRITICAL hive.watchdog: the {loop} loop made no progress for" in log
    assert "most recent call first" in log and "_test_wedge" in log, log[-3000:]  # every thread's stack
    assert log.count("Thread 0x") + log.count("Current thread 0x") >= 3
    # Started again (as the service manager would), it reports what it had claimed.
    trigger.unlink()
    w2 = start_worker(server.url, env=env, home=home)
    got = result_of(server, task, 30)
    assert got["status"] == "failure" and got["result"]["kind"] == "interrupted", got
    after = server.enqueue("echo", {"x": 1})
    assert result_of(server, after, 30)["status"] == "success"
    assert w2.proc.poll() is None
