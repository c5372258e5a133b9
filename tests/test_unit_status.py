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
