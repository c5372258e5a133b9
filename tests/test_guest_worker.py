"""The real worker against the dev server: pausing, the claiming reason, worker_diagnostics, the CPU cap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import psutil
import pytest
from conftest import MAIN, ROOT, clean_env, result_of, results_by_id, results_for, tree_of, wait_for

from supervisor import guest
from supervisor.observe import diagnostics
from supervisor.pool import cpucap

pytestmark = pytest.mark.slow


def _status(home: Path) -> dict:
    try:
        return orjson.loads((home / "status.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}


def _gets(server) -> int:
    return server.requests.count("/get_task")


def _status_written_twice_more(home: Path) -> None:
    """Status is rewritten every ~2 s: two rewrites span many 0.2 s claim polls."""
    first = _status(home).get("updated", 0)
    wait_for(lambda: _status(home).get("updated", 0) > first, 20, what="a status write")
    second = _status(home).get("updated", 0)
    wait_for(lambda: _status(home).get("updated", 0) > second, 20, what="another status write")


def test_pause_on_battery_stops_claiming_finishes_running_tasks_and_resumes(server, start_worker, tmp_path):
    inputs = tmp_path / "inputs.json"
    inputs.write_bytes(b'{"on_battery": false}')
    first = [server.enqueue("sleep_record", {"seconds": 3, "tag": f"a{i}"}) for i in range(2)]
    w = start_worker(server.url, env={guest.INPUTS_ENV: str(inputs)})
    wait_for(lambda: w.log().count("started on slot") >= 2, 30, what="both tasks running")

    inputs.write_bytes(b'{"on_battery": true}')  # the charger is unplugged
    wait_for(lambda: "pausing: on battery" in w.log(), 20, what="the pause")
    later = [server.enqueue("sleep_record", {"seconds": 0.1, "tag": f"b{i}"}) for i in range(2)]
    # The running tasks finish and their results are posted while paused.
    by_id = results_for(server, first, timeout=30)
    assert all(by_id[t][0]["status"] == "success" for t in first)
    wait_for(lambda: _status(w.home).get("not_claiming_because") == "paused: on battery", 20,
             what="status.json to say why")
    gets = _gets(server)
    _status_written_twice_more(w.home)
    assert _gets(server) == gets, "claimed while paused"
    assert not any(t in results_by_id(server) for t in later)
    assert _status(w.home)["claiming"] is False and _status(w.home)["pause"]["inputs"]["on_battery"] is True

    inputs.write_bytes(b'{"on_battery": false}')  # back on mains power
    by_id = results_for(server, later, timeout=30)
    assert all(by_id[t][0]["status"] == "success" for t in later)
    log = w.log()
    assert log.count("pausing: on battery") == 1 and log.count("resuming: paused for") == 1, log
    wait_for(lambda: _status(w.home).get("claiming") is True, 20, what="status.json to say claiming")


def test_pause_file_holds_every_claim_and_status_says_why(server, start_worker, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "pause").write_text("maintenance window\n")
    task = server.enqueue("echo", {"x": 1})
    w = start_worker(server.url, home=home)
    wait_for(lambda: (_status(home).get("not_claiming_because") or "").startswith("paused: pause file"), 30,
             what="status.json to show the pause")
    out = subprocess.run([sys.executable, str(MAIN), "--home", str(home), "--status"], cwd=ROOT,
                         env=clean_env(), capture_output=True, text=True, timeout=60).stdout
    assert f"claiming: no, paused: pause file {home / 'pause'} exists ('maintenance window')" in out, out
    _status_written_twice_more(home)
    assert _gets(server) == 0  # not a single GET while paused, from the first moment
    (home / "pause").unlink()
    wait_for(lambda: task in results_by_id(server), 30, what="the task after the pause file went")
    assert "resuming: paused for" in w.log()
    wait_for(lambda: _status(home).get("claiming") is True, 20, what="claiming again")
    out = subprocess.run([sys.executable, str(MAIN), "--home", str(home), "--status"], cwd=ROOT,
                         env=clean_env(), capture_output=True, text=True, timeout=60).stdout
    assert "claiming: yes" in out


def test_worker_diagnostics_end_to_end(server, start_worker):
    # A crashed executor, a time-limit kill and an unknown type whose name looks like a credential.
    server.enqueue("segfault", {})
    server.enqueue("spin", {})
    server.enqueue("token=s3cr3t-value", {})
    w = start_worker(server.url, env={"HIVE_TASK_LIMITS": "spin = {time = 0.5}"})
    wait_for(lambda: len(server.results()) >= 3, 60, what="the three failures")
    diag_id = server.enqueue(diagnostics.TASK_TYPE, {})
    got = result_of(server, diag_id)
    assert got["status"] == "success", got
    d = got["result"]
    assert len(orjson.dumps(d)) <= diagnostics.MAX_BYTES
    assert d["version"] == "2.0.0" and d["worker_id"] == (w.home / "worker.conf").read_text()
    assert d["uptime_seconds"] > 0 and d["state"] == "running" and d["claiming"] is True
    assert d["pool"]["size"] == 2 and len(d["pool"]["slots"]) == 2
    assert {s["state"] for s in d["pool"]["slots"]} <= {"idle", "busy", "starting", "paused", "down"}
    assert d["failures"]["since_start"] == {"crashed": 1, "time_limit": 1, "unknown_task": 1}, d["failures"]
    assert d["failures"]["last_hour"] == d["failures"]["since_start"]
    assert d["limits"]["task_limits"]["spin"] == {"time": 0.5}
    assert d["outbox"]["results"] == 0 and d["outbox"]["oldest_age_seconds"] is None
    assert d["pause"]["paused"] is False and d["platform"]["system"] and d["platform"]["python"]
    log = "\n".join(d["log"])
    assert "crashed its executor" in log and "time limit of 0.5 s reached" in log
    assert "token=***" in log and "s3cr3t" not in log
    assert all("\n" not in line and len(line) <= diagnostics.LINE_MAX for line in d["log"])
    assert "answered with this worker's diagnostics" in w.log()


def test_cpu_cap_puts_every_executor_under_one_quota(server, start_worker):
    w = start_worker(server.url, env={"HIVE_CPU_CAP_PERCENT": "50"})
    cap = wait_for(lambda: _status(w.home).get("cpu_cap"), 30, what="status.json")
    if not cap["enforced_by"]:
        pytest.skip(f"no CPU cap mechanism here: {cap['not_enforced_because']}")
    assert "not enforced" not in w.log()
    w.wait_ready(2)
    task = server.enqueue("echo", {"under": "the cap"})  # the nested jobs / the cgroup still run tasks
    assert result_of(server, task)["status"] == "success"
    if sys.platform == "win32":
        assert cap["enforced_by"] == "a Windows Job Object CPU rate hard cap"
        return
    cgroup = Path(cap["enforced_by"].rsplit(" in ", 1)[1])
    assert cgroup.name == f"hive-executors-{w.pid}"
    quota = (cgroup / "cpu.max").read_text().split()[0] if (cgroup / "cpu.max").exists() else (
        cgroup / "cpu.cfs_quota_us").read_text().strip()
    assert int(quota) == cpucap.quota_us(50, psutil.cpu_count())
    weight = (cgroup / "cpu.shares") if (cgroup / "cpu.shares").exists() else (cgroup / "cpu.weight")
    expected = cap["weight"]  # what the executors weighed without the cgroup (cpucap.group_weight)
    assert expected in (cpucap.group_weight("below_normal", 2), *cpucap.NICE_WEIGHTS)
    assert int(weight.read_text()) == (expected if weight.name == "cpu.shares" else round(expected * 100 / 1024))
    members = set(map(int, (cgroup / "cgroup.procs").read_text().split()))
    executors = {p.pid for p in tree_of(w.pid)}
    assert len(executors) == 2 and executors <= members and w.pid not in members
    w.stop()
    assert not cgroup.exists()  # removed once the executors are gone
