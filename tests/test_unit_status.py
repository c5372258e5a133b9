"""--status's decision (issue 23.5): which exit code a status.json means. Pure: no processes."""

from __future__ import annotations

import pytest

from supervisor.observe.status import EXIT_HUNG, EXIT_NOT_RUNNING, EXIT_RUNNING, STALE_AFTER, liveness


def _alive(pid, started):
    return True


def _gone(pid, started):
    return False


@pytest.mark.parametrize("data, alive, code, words", [
    ({"state": "running", "updated": 100.0}, _alive, EXIT_RUNNING, "running"),
    ({"state": "running", "updated": 100.0}, _gone, EXIT_NOT_RUNNING, "the process is gone"),
    ({"state": "stopped", "updated": 100.0}, _alive, EXIT_NOT_RUNNING, "stopped"),
    ({"state": "running", "updated": 100.0 - STALE_AFTER - 5}, _alive, EXIT_HUNG, "not responding"),
    ({"state": "running", "updated": 100.0 - STALE_AFTER - 5}, _gone, EXIT_NOT_RUNNING, "the process is gone"),
])
def test_liveness_codes(data, alive, code, words):
    got_code, got_words = liveness(data, 100.0, alive)
    assert got_code == code and words in got_words


def test_a_reused_pid_is_not_the_worker():
    import os

    import psutil

    from supervisor.observe.status import _same_process_alive

    me = psutil.Process().create_time()
    assert _same_process_alive(os.getpid(), me)
    assert not _same_process_alive(os.getpid(), me - 3600)  # same pid, an hour older: another process
    assert not _same_process_alive(None, None)


def test_a_slot_without_an_executor_shows_no_pid(tmp_path):
    """Issue 23.11: "pid None" while a slot's executor is being replaced."""
    import orjson

    from supervisor.observe.status import render

    (tmp_path / "status.json").write_bytes(orjson.dumps({"state": "running", "slots": [
        {"slot": 0, "state": "down", "pid": None, "tasks_done": 3, "task": None}]}))
    assert "  #0: down tasks done 3" in render(tmp_path).splitlines()


# status.json's keys in their order, as --status, scripts and tests read them (issue 25.1: kept exactly).
STATUS_KEYS = ["worker_id", "version", "pid", "pid_started", "server_url", "state", "slots", "outbox_results",
               "outbox_bytes", "delivery", "claiming", "not_claiming_because", "cannot_run_tasks", "pause", "cpu_cap",
               "updated", "last_contact", "last_error", "last_error_at", "results_delivered"]


def test_status_json_and_diagnostics_are_written_from_one_snapshot(tmp_path):
    """An arbiter over fakes (tests/support/fake_parts.py), never run: status.json keeps its keys and
    their order, and worker_diagnostics repeats the same values from the same snapshot."""
    import os

    import orjson
    from support.fake_parts import make_rig

    from supervisor.observe import diagnostics

    rig = make_rig(tmp_path)
    try:
        rig.arbiter.status.server_error("claim failed: http://user:secret@127.0.0.1:9/api refused")
        rig.guest.pause = "on battery"
        rig.arbiter.update_gate(rig.clock())
        data = orjson.loads((tmp_path / "status.json").read_bytes())
        assert list(data) == STATUS_KEYS
        assert data["state"] == "starting" and data["pid"] == os.getpid()
        assert data["server_url"] == "http://127.0.0.1:9/api" and "secret" not in data["last_error"]
        assert data["claiming"] is False and data["not_claiming_because"] == "paused: on battery"
        snap = rig.arbiter.snapshot()
        answer = orjson.loads(diagnostics.answer(snap, rig.arbiter.settings, rig.arbiter.health, rig.arbiter.outbox))
        for key in ("worker_id", "version", "pid", "state", "claiming", "not_claiming_because", "cannot_run_tasks",
                    "pause", "cpu_cap", "delivery"):
            assert answer[key] == data[key], key
        assert answer["pool"] == {"size": 2, "slots": data["slots"]}
        assert answer["outbox"]["results"] == data["outbox_results"] == 0
        assert answer["server"]["last_error"] == data["last_error"]
    finally:
        rig.close()
