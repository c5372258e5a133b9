"""What a task sees (issue 3, items 5-7): scratch and data folders, priority, environment, recycling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import result_of, wait_for


def test_scratch_data_priority_and_environment(server, start_worker):
    w = start_worker(server.url, env={"HIVE_POOL_SIZE": "1", "HIVE_SERVER_URL": server.url,
                                      "HIVE_EXECUTOR_MEMORY_GROWTH_MB": "50"})
    # a and b each keep 30 MB alive in their executor: after b it has grown 60 MB, over the 50.
    server.enqueue("whereami", {"keep_mb": 30}, task_id="a")
    server.enqueue("whereami", {"keep_mb": 30}, task_id="b")
    server.enqueue("whereami", {}, task_id="c")
    a, b, c = (result_of(server, i)["result"] for i in ("a", "b", "c"))
    # An empty scratch folder per task, as the working directory: one per executor, emptied after
    # each task (task a left a file and a folder tree in it), removed with its executor.
    assert a["cwd"] == a["scratch"] == b["scratch"] == b["cwd"] and a["pid"] == b["pid"]
    assert Path(a["scratch"]).parent == w.home / "scratch"
    assert a["found_in_scratch"] == b["found_in_scratch"] == c["found_in_scratch"] == []
    # The executor's real memory, measured by itself, recycles it (the decision over the sizes it
    # reports, and recycling after MAX_TASKS_PER_EXECUTOR: test_unit_pool_loop.py).
    assert c["pid"] != b["pid"] and c["scratch"] != b["scratch"]
    assert "grew" in w.log() and "EXECUTOR_MEMORY_GROWTH_MB=50" in w.log()
    wait_for(lambda: not Path(a["scratch"]).exists(), 10, what="scratch removed with its executor")
    # A persistent data folder per task type, kept across executors.
    assert a["data"] == b["data"] == c["data"] == str(w.home / "data" / "whereami")
    assert (a["runs"], b["runs"], c["runs"]) == (1, 2, 3)
    assert a["task"] == {"id": "a", "task_type": "whereami"}
    if os.name == "posix":
        assert a["nice"] == 10  # EXECUTOR_PRIORITY below_normal
    # Nothing of the operator's HIVE_* environment reaches task code.
    assert a["env"] == ["HIVE_INTERNAL_TREE_TOKEN"]


def test_scratch_removed_after_a_kill(server, start_worker, tmp_path):
    w = start_worker(server.url, env={"HIVE_TASK_TIME_LIMIT": "1"})
    server.enqueue("write_pid_and_hang", {"pidfile": str(tmp_path / "p")}, task_id="k")
    wait_for(lambda: (w.home / "scratch").is_dir() and list((w.home / "scratch").iterdir()), 20, what="scratch")
    assert result_of(server, "k")["result"]["kind"] == "time_limit"
    wait_for(lambda: not list((w.home / "scratch").iterdir()), 5, what="scratch removed after kill")


# POSIX nice values; on Windows psutil's nice() is the priority class (Wine records it, does not apply it).
@pytest.mark.parametrize("priority, nice", [
    pytest.param("idle", 0x40 if os.name == "nt" else 19, marks=pytest.mark.slow),  # IDLE_PRIORITY_CLASS
    ("below_normal", 0x4000 if os.name == "nt" else 10),  # BELOW_NORMAL_PRIORITY_CLASS, the default
    pytest.param("normal", 0x20 if os.name == "nt" else 0, marks=pytest.mark.slow),  # NORMAL_PRIORITY_CLASS
])
def test_priority_setting(server, start_worker, priority, nice):
    start_worker(server.url, env={"HIVE_EXECUTOR_PRIORITY": priority})
    server.enqueue("whereami", {}, task_id="p")
    got = result_of(server, "p")["result"]
    assert got["nice"] == nice
    if os.name == "nt":  # no crash dialog can keep a dead task's process alive (SEM_NOGPFAULTERRORBOX, ...)
        assert got["error_mode"] & 0x8003 == 0x8003, got["error_mode"]
