"""The whole path, server -> supervisor -> executor -> result -> server, with real processes and HTTP."""

from __future__ import annotations

import time

import pytest
from conftest import results_by_id, wait_for


def _results(server, n, timeout=30.0):
    return wait_for(lambda: len(server.results()) >= n and results_by_id(server), timeout, what=f"{n} results")


def test_many_tasks_through_a_pool_of_two(server, start_worker):
    ids = [server.enqueue("sleep_record", {"seconds": 0.15, "tag": f"t{i}"}) for i in range(12)]
    w = start_worker(server.url)
    _results(server, len(ids))
    # Once the worker has seen every POST accepted nothing is left to send: a duplicate is here by now.
    wait_for(lambda: w.log().count(" posted\n") >= len(ids), 10, what="every post acknowledged")
    by_id = results_by_id(server)
    assert sorted(by_id, key=str) == sorted(ids, key=str)
    spans = []
    for i, tid in enumerate(ids):
        assert len(by_id[tid]) == 1, by_id[tid]
        r = by_id[tid][0]
        assert r["status"] == "success" and r["result"]["tag"] == f"t{i}"
        spans.append((r["result"]["start"], r["result"]["end"], r["result"]["pid"]))
    assert len({pid for _, _, pid in spans}) == 2  # both executors worked
    overlaps = [(a, b) for a in spans for b in spans if a is not b and a[0] < b[1] and b[0] < a[1]]
    assert overlaps, "no two tasks ran at the same time"
    assert w.proc.poll() is None


def test_headers_and_id_types_are_echoed(server, start_worker):
    server.enqueue("echo", {"a": 1}, task_id=7)
    server.enqueue("echo", {"b": 2}, task_id="abc-1")
    w = start_worker(server.url)
    by_id = _results(server, 2)
    assert by_id[7][0]["result"] == {"a": 1} and by_id["abc-1"][0]["result"] == {"b": 2}
    worker_id = (w.home / "worker.conf").read_text()
    for r in by_id[7] + by_id["abc-1"]:
        assert r["worker_id"] == worker_id
    reqs = list(server.requests)
    assert reqs and all(r.headers.get("X-Worker-ID") == worker_id for r in reqs)
    assert all(r.headers.get("X-Worker-Version") == "2.0.0" for r in reqs)


def test_return_conventions_and_failure_kinds(server, start_worker):
    cases = {
        "ok": ("echo", {"x": [1, 2]}),
        "plain": ("plain", {"value": 5}),
        "plain_dict": ("plain", {"value": {"no": "status"}}),
        "fail": ("returns_failure", {"message": "site said no"}),
        "raise": ("raises", {"message": "kaput"}),
        "unknown": ("no_such_task", {}),
        "params_list": ("echo", [1, 2]),
        "bad_kwarg": ("sleep_record", {"nope": 1}),
        "unserializable": ("unserializable", {}),
        "too_large": ("huge", {"size": 5000}),
        "update": ("update_worker", {"url": "http://127.0.0.1:9/x.zip"}),
    }
    for tid, (task_type, params) in cases.items():
        server.enqueue(task_type, params, task_id=tid)
    # A release key (config.py trusts none): else the update is refused for that reason first.
    w = start_worker(server.url, env={"HIVE_RESULT_MAX_BYTES": "1000",
                                      "HIVE_UPDATE_ROOT_KEYS": "Gtt6yuQClBCdZBFXnucwWGDkybjhgRtcETZEhCEWv3I="})
    by_id = _results(server, len(cases))
    got = {tid: rs[0] for tid, rs in by_id.items()}
    assert got["ok"]["status"] == "success" and got["ok"]["result"] == {"x": [1, 2]}
    assert got["plain"]["status"] == "success" and got["plain"]["result"] == 5
    assert got["plain_dict"]["result"] == {"no": "status"}
    expected_kind = {"fail": "task_failed", "raise": "exception", "unknown": "unknown_task",
                     "params_list": "bad_params", "bad_kwarg": "bad_params",
                     "unserializable": "unserializable_result", "too_large": "result_too_large",
                     "update": "update_failed"}
    for tid, kind in expected_kind.items():
        assert got[tid]["status"] == "failure", got[tid]
        assert got[tid]["result"]["kind"] == kind, got[tid]
        assert isinstance(got[tid]["result"]["error"], str) and "\n" not in got[tid]["result"]["error"]
    assert got["fail"]["result"]["error"] == "site said no"
    assert "kaput" in got["raise"]["result"]["error"]
    assert "needs the frozen build" in got["update"]["result"]["error"]
    log = w.log()
    assert "ValueError: kaput" in log and "Traceback" in log  # the traceback goes to the log
    assert w.proc.poll() is None


def test_print_output_reaches_the_log_with_the_task_id(server, start_worker):
    server.enqueue("prints", {"text": "a line from the task"}, task_id="p-1")
    w = start_worker(server.url)
    _results(server, 1)
    wait_for(lambda: "task 'p-1': a line from the task" in w.log(), 10, what="print line in log")


def test_no_tasks_pacing_is_per_worker_not_per_executor(server, start_worker):
    w = start_worker(server.url, env={"HIVE_POOL_SIZE": "4", "HIVE_NO_TASK_SLEEP": "0.25"})
    w.wait_ready(4)

    def polls() -> int:
        return server.requests.count("/get_task")
    first = wait_for(polls, 10, what="a first poll")
    first = wait_for(lambda: polls() > first and polls(), 5, what="a poll with every executor ready")
    start = time.monotonic()
    wait_for(lambda: polls() >= first + 4, 10, what="four more polls")
    elapsed = time.monotonic() - start
    # One poll per NO_TASK_SLEEP (+-10% jitter) for the whole worker: four take ~1 s; one per
    # executor would take a quarter of that.
    assert 4 * 0.225 - 0.1 <= elapsed <= 4 * 0.275 + 1.0, elapsed
    assert polls() <= first + 5


@pytest.mark.parametrize("task_type", ["get_system_info", "example"])
def test_builtin_tasks(server, start_worker, task_type):
    params = {"text": "hi", "repeat": 2} if task_type == "example" else {}
    server.enqueue(task_type, params, task_id=1)
    start_worker(server.url)
    r = _results(server, 1)[1][0]
    assert r["status"] == "success"
    if task_type == "example":
        assert r["result"] == {"echo": ["hi", "hi"]}
    else:
        for key in ("hostname", "os", "os_version", "processor", "python_version", "cpu_count",
                    "memory_total_mb", "worker_version", "pool_size"):
            assert key in r["result"], key
        assert r["result"]["worker_version"] == "2.0.0" and r["result"]["pool_size"] == 2


def test_one_worker_per_home(server, start_worker, tmp_path):
    home = tmp_path / "shared-home"
    first = start_worker(server.url, home=home)
    first.wait_ready()
    second = start_worker(server.url, home=home)
    assert second.wait(30) == 3
    assert "another worker is already running in" in second.console()
    assert first.proc.poll() is None
    first.proc.kill()  # a kill leaves worker.lock behind; it must not block the next start
    first.wait(10)
    third = start_worker(server.url, home=home)
    third.wait_ready()
