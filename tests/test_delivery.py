"""Delivery never wedges (issue 22): each result has its own retry schedule, no answer is final on
its own, dead letters are retried, the task id travels byte for byte, no claim slips into a drain.
Real server on 127.0.0.1, the real worker."""

from __future__ import annotations

import subprocess
import sys
import threading

import orjson
import pytest
from conftest import MAIN, ROOT, results_for, wait_for

from devserver import Fault
from supervisor.update import updater

pytestmark = pytest.mark.slow


def _posts_of(server, task_id) -> int:
    """How many times a result for ``task_id`` was POSTed (accepted or not)."""
    needle = b'"task_id":' + orjson.dumps(task_id)
    return sum(1 for r in server.requests.snapshot() if r.path.endswith("/submit_result") and needle in r.body)


def _refuse(task_id, code: int, refusing: threading.Event | None = None):
    """A body_faults hook: ``code`` for every result of ``task_id`` (while ``refusing`` is set)."""
    needle = b'"task_id":' + orjson.dumps(task_id)

    def hook(method: str, path: str, body: bytes) -> Fault | None:
        if path.endswith("submit_result") and needle in body and (refusing is None or refusing.is_set()):
            return Fault.status(code, f"refused {task_id}")
        return None
    return hook


def test_a_result_the_server_refuses_never_delays_the_others(server, start_worker):
    # 22.1: the server answers 500 to one result only. Today the oldest result was the only one
    # posted (87 times in 60 s) and none of the later ones arrived.
    server.body_faults = _refuse("poison", 500)
    server.enqueue("echo", {"n": 0}, task_id="poison")
    w = start_worker(server.url, env={"HIVE_TIME_ERROR_SLEEP": "30"})
    wait_for(lambda: _posts_of(server, "poison") >= 1, 30, what="the poison result's first POST")
    others = [server.enqueue("echo", {"n": i}, task_id=f"later{i}") for i in range(1, 7)]
    by_id = results_for(server, others, timeout=60)
    assert all(by_id[i][0]["status"] == "success" for i in others)
    assert "poison" not in by_id
    # Retried on its own schedule (1, 2, 4 ... s), not in a loop:
    assert _posts_of(server, "poison") < 12
    assert not list((w.home / "outbox-dead").glob("*.json"))
    server.body_faults = None
    assert results_for(server, ["poison"], timeout=60)["poison"][0]["status"] == "success"
    assert "posted after" in w.log()


def test_a_few_seconds_of_404_loses_no_result(server, start_worker):
    # 22.2: a deploy, an expired proxy login or a captive portal answers 404 for a while. Today every
    # result waiting then went to outbox-dead/ for good.
    refusing = threading.Event()
    refusing.set()
    ids = [server.enqueue("echo", {"n": i}, task_id=f"t{i}") for i in range(5)]
    server.body_faults = lambda method, path, body: (Fault.status(404, "<html>not found</html>")
                                                     if path.endswith("submit_result") and refusing.is_set() else None)
    w = start_worker(server.url)
    wait_for(lambda: all(_posts_of(server, i) >= 2 for i in ids), 60, what="every result refused twice")
    refusing.clear()
    by_id = results_for(server, ids, timeout=60)
    assert all(by_id[i][0]["status"] == "success" for i in ids)
    assert not list((w.home / "outbox-dead").glob("*.json"))
    wait_for(lambda: not list((w.home / "outbox").glob("*")), 10, what="an empty outbox (no .refused left)")


def test_a_result_refused_for_its_whole_window_is_a_dead_letter_retried_slowly(server, start_worker):
    # 22.2: only after RESULT_RETRY_DAYS of refusals (here 3 s) is a result a dead letter; status.json,
    # --status and worker_diagnostics say how many wait and why; dead letters are retried (every
    # window/28, at least 1 s) and delivered when the server takes them again.
    server.body_faults = _refuse("refused", 400)
    server.enqueue("echo", {}, task_id="refused")
    w = start_worker(server.url, env={"HIVE_RESULT_RETRY_DAYS": str(3 / 86400)})
    dead = wait_for(lambda: list((w.home / "outbox-dead").glob("*.json")), 30, what="dead letter")
    assert len(dead) == 1 and not list((w.home / "outbox").glob("*.json"))
    assert _posts_of(server, "refused") >= 2  # retried within its window first
    reason = dead[0].with_name(dead[0].name + ".reason.txt")
    wait_for(reason.exists, 5, what="the reason file")
    assert reason.read_text(encoding="utf-8").startswith("submit_result: HTTP 400 'refused refused' (refused for")
    assert "moved to dead letters" in w.log()

    def delivery():
        data = orjson.loads((w.home / "status.json").read_bytes())
        return data.get("delivery") if data.get("delivery", {}).get("dead_letters") == 1 else None
    got = wait_for(delivery, 20, what="status.json naming the dead letter")
    assert "HTTP 400" in got["dead_letters_because"]
    out = subprocess.run([sys.executable, str(MAIN), "--home", str(w.home), "--status"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30).stdout
    assert "dead letters: 1 in outbox-dead/" in out and "HTTP 400" in out, out
    server.enqueue("worker_diagnostics", {}, task_id="diag")
    report = results_for(server, ["diag"], timeout=30)["diag"][0]["result"]
    assert report["delivery"]["dead_letters"] == 1 and "HTTP 400" in report["delivery"]["dead_letters_because"]

    # Still retried as a dead letter: once the server takes it, it is delivered and gone.
    posts = _posts_of(server, "refused")
    wait_for(lambda: _posts_of(server, "refused") > posts, 30, what="a dead letter's slow retry")
    server.body_faults = None
    results_for(server, ["refused"], timeout=30)
    wait_for(lambda: not list((w.home / "outbox-dead").iterdir()), 10, what="outbox-dead/ emptied")
    assert "dead letters: 1 of 1 retried were delivered" in w.log()


BIG = b"123456789012345678901234567890"


def test_answers_a_standard_parser_reads_are_run_and_their_ids_echoed_byte_for_byte(server, start_worker):
    # 22.4: today a BOM, NaN or a lone surrogate made the answer "not JSON" (the task was never
    # answered) and an id above 2**64 was posted back as 1.2345678901234568e+29.
    answers = {
        b"7001": b'\xef\xbb\xbf{"id": 7001, "task_type": "echo", "params": {"bom": 1}}',
        b"NaN": b'{"id": NaN, "task_type": "echo", "params": {}}',
        b'"\\ud83d"': b'{"id": "\\ud83d", "task_type": "echo", "params": {}}',
        BIG: b'{"id": ' + BIG + b', "task_type": "echo", "params": {"n": 1}}',
        b"1.0E+2": b'{"id": 1.0E+2, "task_type": "echo", "params": {}}',
    }
    server.inject(*(Fault.garbage(body) for body in answers.values()), path="/get_task")
    w = start_worker(server.url)

    def posted() -> dict[bytes, bytes] | None:
        bodies = [r.body for r in server.requests.snapshot() if r.path.endswith("/submit_result")]
        got = {raw: next((b for b in bodies if b.startswith(b'{"task_id":' + raw + b',')), None) for raw in answers}
        return got if all(got.values()) else None
    got = wait_for(posted, 60, what="a result for every answer, its id byte for byte")
    for raw, body in got.items():
        assert orjson.loads(body.replace(raw, b"0", 1))["status"] == "success", body
    assert "not JSON" not in w.log()
    assert "1.2345678901234568e+29" not in w.log()


def test_no_claim_slips_into_a_self_update_drain(server, tmp_path):
    """22.6, at the worker level: a real Arbiter (in this process, so its update coordinator can
    take the frozen build's drain path) with real executors and claim thread against the dev
    server. 20 update_worker tasks, each followed by quick tasks; every update is refused after
    its drain (the zip is not there) and claiming resumes at once (UPDATE_ERROR_SLEEP 0). From the
    moment the claim thread has an update task until that update is answered, it must take no slot
    for another claim (today it asked for the next task at once, and one could run during the drain)."""
    import importlib.util
    import logging
    import time

    from conftest import TEST_CONFIG

    from supervisor import settings as settings_mod
    from supervisor.arbiter import build_arbiter

    spec = importlib.util.spec_from_file_location("hive_test_config", TEST_CONFIG)
    test_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_config)
    for i in range(20):
        server.enqueue("update_worker", {"url": f"{server.url}/missing-{i}.zip"}, task_id=f"u{i}")
        for j in range(3):
            server.enqueue("sleep_record", {"seconds": 0.02}, task_id=f"t{i}-{j}")
    home = tmp_path / "home"
    home.mkdir()
    settings = settings_mod.load(test_config, home, {"server_url": server.url, "pool_size": 2},
                                 environ={"HIVE_UPDATE_ERROR_SLEEP": "0", "HIVE_NO_TASK_SLEEP": "0.1",
                                          "HIVE_TASK_ERROR_SLEEP": "0",
                                          # a throwaway key: with none trusted an update is refused at once
                                          "HIVE_UPDATE_ROOT_KEYS": "Gtt6yuQClBCdZBFXnucwWGDkybjhgRtcETZEhCEWv3I="})
    arbiter = build_arbiter(settings, "w-drain", "2.0.0", set(test_config.TASK_REGISTRY), config_path=str(TEST_CONFIG))
    arbiter.updates.frozen = True  # the drain path; prepare refuses the missing zip, nothing is launched
    events: list[tuple[float, str]] = []  # (monotonic, what), in order

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append((time.monotonic(), record.getMessage()))
    acquire = arbiter.gate.acquire

    def watched_acquire(timeout: float) -> bool:  # the claim thread taking a slot for its next GET
        got = acquire(timeout)
        if got:
            events.append((time.monotonic(), "slot taken"))
        return got
    arbiter.gate.acquire = watched_acquire
    hive = logging.getLogger("hive")
    handler, level = Keep(), hive.level
    hive.addHandler(handler)
    hive.setLevel(logging.INFO)
    runner = threading.Thread(target=arbiter.run, name="arbiter", daemon=True)
    runner.start()
    try:
        results_for(server, [f"u{i}" for i in range(20)], timeout=240)
    finally:
        arbiter.request_stop("test over")
        arbiter.wake()
        runner.join(60)
        hive.removeHandler(handler)
        hive.setLevel(level)
    assert not runner.is_alive()
    slipped, update = [], None
    for _, what in sorted(events, key=lambda e: e[0]):
        if what.startswith("claimed task") and "(update_worker)" in what:
            update = what
        elif update and "(update_worker) failed" in what:
            update = None
        elif update and what == "slot taken":
            slipped.append(update)
    assert sum("update: preparing" in what for _, what in events) == 20
    assert not slipped, f"{len(slipped)} of 20 drains had a claim slip in: {slipped}"


def test_a_worker_whose_executors_cannot_start_still_claims_slowly_and_says_why(server, start_worker):
    # 22.11: today such a worker never claimed, so no update_worker or worker_diagnostics could reach it.
    w = start_worker(server.url, env={"TEST_BROKEN_EXECUTOR_IMPORT": "1", "HIVE_NO_EXECUTOR_CLAIM_INTERVAL": "2"})
    wait_for(lambda: "executor failed to start" in w.log(), 30, what="a first start failure")
    server.enqueue("worker_diagnostics", {}, task_id="diag")
    server.enqueue("echo", {"x": 1}, task_id="work")
    server.enqueue("update_worker", {"url": "http://127.0.0.1:9/w.zip"}, task_id="upd")
    by_id = results_for(server, ["diag", "work", "upd"], timeout=60)
    diag = by_id["diag"][0]
    assert diag["status"] == "success" and diag["result"]["worker_id"]
    assert "none of its 2 executor(s) could start" in diag["result"]["cannot_run_tasks"]
    work = by_id["work"][0]
    assert work["status"] == "failure" and work["result"]["kind"] == "exception"
    assert "this worker cannot run tasks: none of its" in work["result"]["error"]
    assert "(last error: task registry import failed" in work["result"]["error"]  # the start error, named
    # Answered by the supervisor alone: config.py trusts no release key, so self-update is off (was
    # test_update's test_a_worker_without_a_release_key_refuses_updates_and_serves_on).
    assert by_id["upd"][0]["status"] == "failure"
    assert by_id["upd"][0]["result"] == {"error": updater.NO_KEY, "kind": "update_failed"}
    # One claim per interval, each one lent: three tasks took three lends.
    assert w.log().count("claiming one task") >= 3
    # The real executor's own traceback reaches the log (how the pool retries it, with doubling
    # backoff per slot: test_unit_pool_loop.py).
    assert "broken on purpose" in w.log()
    assert w.proc.poll() is None
