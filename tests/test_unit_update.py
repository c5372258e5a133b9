"""The update coordinator's phases without processes or sockets: fakes for the worker around it,
a stand-in for prepare() and launch(), and explicit clock values."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from supervisor.model import Claim, Task
from supervisor.store.journal import new_key
from supervisor.update import coordinator as coordinator_mod
from supervisor.update import updater
from supervisor.update.coordinator import Phase, UpdateCoordinator, Worker
from supervisor.update.errors import UpdateRefused

WAIT = 10.0  # seconds a test waits for the prepare thread at most


class FakeWorker:
    """Records what the coordinator asks of the worker; in_flight is set by the test."""

    def __init__(self) -> None:
        self.running, self.claimed = 0, 0
        self.calls: list[tuple[Any, ...]] = []
        self.woken = threading.Event()

    def handle(self) -> Worker:
        return Worker(
            in_flight=lambda: (self.running, self.claimed),
            kill_running=lambda why: self.calls.append(("kill", why)),
            answer=lambda claim, ok, raw: self.calls.append(("answer", claim.task.id, ok, orjson.loads(raw))),
            fail=lambda claim, error: self.calls.append(("fail", claim.task.id, error)),
            persist=lambda: self.calls.append(("persist",)),
            forget=lambda claim: self.calls.append(("forget", claim.task.id)),
            stop=lambda why: self.calls.append(("stop", why)),
            wake=self.woken.set,
        )


class Prepared:
    """A stand-in for updater.prepare: waits until the test releases it, then returns or raises."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.release = threading.Event()
        self.params: list[Any] = []

    def __call__(self, params: Any) -> Any:
        self.params.append(params)
        assert self.release.wait(WAIT)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def settings(tmp_path: Path, **over: Any) -> SimpleNamespace:
    values = {"home": tmp_path, "update_root_keys": [], "update_allow_unsigned": True,
              "update_drain_timeout": 60.0, "update_error_sleep": 30.0, "update_health_timeout": 120.0,
              "update_probation": 0.0}
    values.update(over)
    return SimpleNamespace(**values)


def update_claim(task_id: str = "u1") -> Claim:
    return Claim(new_key(), Task(id=task_id, task_type=coordinator_mod.TASK_TYPE,
                                 params={"url": "https://user:secret@host/w.zip"}))


def make(tmp_path: Path, outcome: Any = None, launch: Any = None, frozen: bool = True,
         **over: Any) -> tuple[UpdateCoordinator, FakeWorker, Prepared]:
    worker = FakeWorker()
    prepare = Prepared(outcome)
    launched: list[Any] = []
    coord = UpdateCoordinator(settings(tmp_path, **over), "2.0.0", "w1", worker.handle(), frozen=frozen,
                              prepare=prepare, launch=launch or (lambda staged, claim: launched.append(staged)))
    return coord, worker, prepare


def until_prepared(coord: UpdateCoordinator, worker: FakeWorker, prepare: Prepared, now: float) -> None:
    """Let the stand-in finish and the loop take its outcome (the loop is woken, as in the arbiter)."""
    prepare.release.set()
    assert worker.woken.wait(WAIT), "the prepare thread never woke the loop"
    coord.step(now)


def test_refused_at_once_without_a_drain(tmp_path: Path) -> None:
    coord, worker, _ = make(tmp_path, update_allow_unsigned=False)
    coord.receive(update_claim(), 0.0)
    assert worker.calls == [("fail", "u1", updater.NO_KEY)]
    assert coord.phase is Phase.IDLE and coord.hold(0.0) is None  # serves on, no pause

    coord, worker, _ = make(tmp_path, frozen=False)
    coord.receive(update_claim(), 0.0)
    assert worker.calls == [("fail", "u1", "self-update needs the frozen build (this worker runs from source)")]
    assert coord.phase is Phase.IDLE and coord.hold(0.0) is None


def test_drain_waits_for_running_and_claimed_tasks_then_prepares(tmp_path: Path, caplog) -> None:
    coord, worker, prepare = make(tmp_path)
    worker.running, worker.claimed = 2, 1
    with caplog.at_level(logging.INFO, logger="hive.supervisor"):
        coord.receive(update_claim(), 100.0)
    assert "update: task 'u1' received; not claiming, draining 2 running task(s) for up to 60 s" in caplog.text
    assert coord.phase is Phase.DRAINING and coord.hold(100.0) == "draining for an update"
    worker.running = 0
    coord.step(110.0)
    assert coord.phase is Phase.DRAINING  # a claimed task not yet placed still counts
    worker.claimed = 0
    with caplog.at_level(logging.INFO, logger="hive.supervisor"):
        coord.step(111.0)
    assert coord.phase is Phase.PREPARING and coord.hold(111.0) == "draining for an update"
    assert "update: preparing https://***@host/w.zip" in caplog.text and "secret" not in caplog.text
    assert ("kill", "self-update") not in worker.calls
    prepare.release.set()
    assert worker.woken.wait(WAIT)
    assert prepare.params == [{"url": "https://user:secret@host/w.zip"}]


def test_drain_timeout_kills_what_still_runs(tmp_path: Path, caplog) -> None:
    coord, worker, _ = make(tmp_path)
    worker.running = 1
    coord.receive(update_claim(), 0.0)
    coord.step(59.0)
    assert coord.phase is Phase.DRAINING and worker.calls == []
    with caplog.at_level(logging.WARNING, logger="hive.supervisor"):
        coord.step(60.0)
    assert worker.calls == [("kill", "self-update")] and coord.phase is Phase.PREPARING
    assert "update: UPDATE_DRAIN_TIMEOUT passed with 1 task(s) running" in caplog.text


def test_only_the_loop_changes_the_phase(tmp_path: Path) -> None:
    """The prepare thread only hands its outcome back: the phase changes on the loop's next step."""
    coord, worker, prepare = make(tmp_path, outcome=None)
    coord.receive(update_claim(), 0.0)
    coord.step(0.0)
    coord.step(1.0)  # still preparing: nothing to take yet
    assert coord.phase is Phase.PREPARING and worker.calls == []
    prepare.release.set()
    assert worker.woken.wait(WAIT)
    assert coord.phase is Phase.PREPARING and worker.calls == []  # done, but not taken yet
    coord.step(2.0)
    assert coord.phase is Phase.IDLE


def test_already_running_answers_success_without_a_pause(tmp_path: Path, caplog) -> None:
    coord, worker, prepare = make(tmp_path, outcome=None)
    coord.receive(update_claim(), 0.0)
    coord.step(0.0)
    with caplog.at_level(logging.INFO, logger="hive.supervisor"):
        until_prepared(coord, worker, prepare, 1.0)
    assert worker.calls == [("answer", "u1", True, {"message": "already running 2.0.0"})]
    assert "update: version 2.0.0 is already running; nothing to do" in caplog.text
    assert coord.phase is Phase.IDLE and coord.hold(1.0) is None


@pytest.mark.parametrize("error, reason", [
    (UpdateRefused("download: HTTP 404 from https://host/w.zip"), "download: HTTP 404 from https://host/w.zip"),
    (RuntimeError("boom"), "RuntimeError: boom"),  # a surprise is a refusal, never a crash
])
def test_a_refused_prepare_fails_the_task_and_pauses_claims(tmp_path: Path, caplog, error: Exception,
                                                            reason: str) -> None:
    coord, worker, prepare = make(tmp_path, outcome=error)
    coord.receive(update_claim(), 0.0)
    coord.step(0.0)
    with caplog.at_level(logging.INFO, logger="hive.supervisor"):
        until_prepared(coord, worker, prepare, 5.0)
    assert worker.calls == [("fail", "u1", f"update refused: {reason}")]
    assert coord.phase is Phase.IDLE
    assert coord.hold(34.9) == "UPDATE_ERROR_SLEEP after a failed update" and coord.hold(35.0) is None
    assert "not claiming for 30 s (UPDATE_ERROR_SLEEP after a failed update)" in caplog.text
    coord.receive(update_claim("u2"), 40.0)  # the next update is taken again
    assert coord.phase is Phase.DRAINING


def test_staged_release_is_handed_over(tmp_path: Path, caplog) -> None:
    staged = updater.Staged(binary=tmp_path / "worker", version="9.1.0")
    order: list[str] = []
    coord, worker, prepare = make(tmp_path, outcome=staged,
                                  launch=lambda got, claim: order.append(f"launch {got.version} {claim.task.id}"))
    coord.receive(update_claim(), 0.0)
    coord.step(0.0)
    with caplog.at_level(logging.INFO, logger="hive.supervisor"):
        until_prepared(coord, worker, prepare, 1.0)
    assert worker.calls == [("persist",), ("forget", "u1"), ("stop", "self-update")]
    assert order == ["launch 9.1.0 u1"]
    assert coord.phase is Phase.HANDED_OVER and coord.handed_over
    assert "update: updater started for version 9.1.0; this worker exits now" in caplog.text
    coord.receive(update_claim("u2"), 2.0)
    assert worker.calls[-1] == ("fail", "u2", "another update is already in progress")


def test_a_failed_launch_is_a_refused_update(tmp_path: Path) -> None:
    def launch(staged: updater.Staged, claim: Claim) -> None:
        raise UpdateRefused("the updater script exited at once with status 2")

    coord, worker, prepare = make(tmp_path, outcome=updater.Staged(binary=tmp_path / "w", version="9.1.0"),
                                  launch=launch)
    coord.receive(update_claim(), 0.0)
    coord.step(0.0)
    until_prepared(coord, worker, prepare, 1.0)
    assert worker.calls == [("persist",), ("fail", "u1", "update refused: the updater script exited at once with "
                                                          "status 2")]
    assert coord.phase is Phase.IDLE and not coord.handed_over and coord.hold(1.0) is not None


def test_a_second_update_while_one_drains_is_refused(tmp_path: Path) -> None:
    coord, worker, _ = make(tmp_path)
    worker.running = 1
    coord.receive(update_claim("u1"), 0.0)
    coord.receive(update_claim("u2"), 0.0)
    assert worker.calls == [("fail", "u2", "another update is already in progress")]
    assert coord.phase is Phase.DRAINING and coord.claim is not None and coord.claim.task.id == "u1"


def test_report_previous_posts_each_outcome_and_pauses_after_a_rollback(tmp_path: Path, monkeypatch) -> None:
    failed = orjson.dumps({"error": "update from 1 to 2 failed: rolled back", "kind": "update_failed"})
    monkeypatch.setattr(coordinator_mod.startup, "on_healthy",
                        lambda home, version, worker_id, probation_seconds: [("t-7", False, failed, 20.0)])
    coord, worker, _ = make(tmp_path)
    coord.report_previous(100.0)
    assert worker.calls == [("answer", "t-7", False, orjson.loads(failed))]
    assert coord.hold(119.0) == "UPDATE_ERROR_SLEEP after a rolled-back update" and coord.hold(120.0) is None


# ---- healthy means doing work, then a probation (issue 24.1) ----------------------------------------

def test_start_health_needs_every_executor_then_a_probe_round_trip() -> None:
    from supervisor.update.health import PROBE_RETRY, StartHealth

    assert StartHealth(2, wanted=False).came_up  # nothing to decide: as before
    health = StartHealth(2, wanted=True)
    assert health.probe_to_send([0], now=1.0) is None  # slot 1 never started (or cannot import)
    assert health.probe_to_send([], now=2.0) is None and not health.came_up
    probe = health.probe_to_send([1], now=3.0)  # each slot was ready once: the probe goes out
    assert probe is not None and probe.task.task_type == "__hive_probe__" and health.is_probe(probe)
    assert health.probe_to_send([0, 1], now=3.1) is None  # one at a time
    health.probe_done(False, "exception: broken", now=4.0)
    assert not health.came_up and health.probe_to_send([0, 1], now=4.0 + PROBE_RETRY - 0.1) is None
    again = health.probe_to_send([0, 1], now=4.0 + PROBE_RETRY)
    assert again is not None and not health.is_probe(probe)
    health.not_sent()  # no idle executor this turn
    again = health.probe_to_send([0, 1], now=10.0)
    assert again is not None
    health.probe_done(True, "", now=10.5)
    assert health.came_up and health.probe_to_send([0, 1], now=11.0) is None


def test_probation_verdict_counts_runs_that_did_not_close() -> None:
    from supervisor.update.probation import verdict

    record = {"version": "2.1.0", "failures": 0, "open": True}
    assert verdict(None, "2.1.0") == ("none", None)
    assert verdict(record, "2.0.0") == ("none", None)  # another version's probation
    what, after = verdict(record, "2.1.0")  # the run before did not stop cleanly
    assert what == "on probation" and after == {"version": "2.1.0", "failures": 1, "open": True}
    what, after = verdict(dict(record, open=False), "2.1.0")  # it stopped cleanly: not counted
    assert what == "on probation" and after["failures"] == 0 and after["open"]
    assert verdict(dict(record, failures=2), "2.1.0")[0] == "roll back"


def test_probation_rolls_back_after_three_crashes(tmp_path: Path) -> None:
    from supervisor.update import probation as prob
    from supervisor.update import records, startup

    home = tmp_path
    exe = tmp_path / "worker"
    exe.write_bytes(b"new")
    records.backup_of(exe).write_bytes(b"old")
    upd = records.update_dir(home)
    records.write_pending(upd, {"task_id": "u9", "from": "2.0.0", "to": "2.1.0", "error_sleep": 30.0})
    [(task_id, ok, _, _)] = startup.on_healthy(home, "2.1.0", "w1", probation_seconds=1800)
    assert (task_id, ok) == ("u9", True)
    for crashed in (1, 2):  # the healthy run, then the next one, each crash (never a clean stop)
        p = prob.Probation(home, "2.1.0", health_timeout=60)
        assert p.on_start(exe, now=0.0) is None and exe.read_bytes() == b"new"
        assert prob.read(upd)["failures"] == crashed
    p = prob.Probation(home, "2.1.0", health_timeout=60)
    assert p.on_start(exe, now=0.0) == prob.EXIT_ROLLED_BACK  # after the third crash the start rolls back
    assert exe.read_bytes() == b"old" and not records.backup_of(exe).exists() and prob.read(upd) is None
    # The old version, once healthy, reports why and refuses the version.
    [(task_id, ok, raw, pause)] = startup.on_healthy(home, "2.0.0", "w1", probation_seconds=1800)
    assert (task_id, ok, pause) == ("u9", False, 30.0)
    error = orjson.loads(raw)["error"]
    assert error == ("update from 2.0.0 to 2.1.0 failed: rolled back: version 2.1.0 crashed or did not come up 3 "
                     "times within its probation of 1800 s")
    assert "2.1.0" in records.bad_versions(upd) and prob.read(upd) is None
    # What a Windows rollback leaves (the failed binary, renamed while it ran) goes at the next start.
    prob.failed_copy(exe).write_bytes(b"new")
    assert prob.Probation(home, "2.0.0", health_timeout=60).on_start(exe, now=0.0) is None
    assert not prob.failed_copy(exe).exists() and exe.read_bytes() == b"old"


def test_probation_clean_stops_do_not_count_and_it_ends_when_served(tmp_path: Path) -> None:
    from supervisor.update import probation as prob

    upd = tmp_path / "update"
    exe = tmp_path / "worker"
    exe.write_bytes(b"new")
    prob.begin(upd, "2.1.0", "2.0.0", "u9", 100.0, 0.0)
    first = prob.Probation(tmp_path, "2.1.0", health_timeout=60)  # the run that decided the update healthy
    first.adopt(prob.read(upd), now=0.0)
    first.on_stop(0.0)
    for _ in range(5):  # restarts with clean stops (an operator, a shutdown): never a rollback
        p = prob.Probation(tmp_path, "2.1.0", health_timeout=60)
        assert p.on_start(exe, now=0.0) is None
        assert p.tick(5.0, came_up=True) is None
        p.on_stop(10.0)
    assert prob.read(upd)["failures"] == 0 and prob.read(upd)["uptime"] == 50.0
    p = prob.Probation(tmp_path, "2.1.0", health_timeout=60)
    p.on_start(exe, now=0.0)
    assert p.tick(prob.PROBATION_SAVE_EVERY, came_up=True) is None and prob.read(upd)["uptime"] == 80.0
    p.tick(2 * prob.PROBATION_SAVE_EVERY, came_up=True)  # 110 s of running time: served
    assert prob.read(upd) is None and p.record is None
    p.on_stop(70.0)
    assert prob.read(upd) is None


def test_a_run_on_probation_that_does_not_come_up_stops_and_counts(tmp_path: Path) -> None:
    from supervisor.update import probation as prob

    upd = tmp_path / "update"
    exe = tmp_path / "worker"
    exe.write_bytes(b"new")
    prob.begin(upd, "2.1.0", "2.0.0", "u9", 1800.0, 0.0)
    p = prob.Probation(tmp_path, "2.1.0", health_timeout=60)
    p.on_start(exe, now=0.0)
    assert p.tick(59.0, came_up=False) is None
    why = p.tick(61.0, came_up=False)
    assert why is not None and "did not come up within 60 s" in why
    p.on_stop(62.0)  # the stop that follows is not a clean one for the probation
    assert prob.read(upd)["open"] and prob.Probation(tmp_path, "2.1.0", 60).on_start(exe, 0.0) is None
    assert prob.read(upd)["failures"] == 2  # the first run (never closed) and this one


# ---- parse_params: each field's check, in the order they are checked (pure) ---------------------

U = "http://h/r.zip"
SIGNED = {"release": "{}", "release_signature": "c2ln", "release_trust": "{}"}


@pytest.mark.parametrize(("params", "message"), [
    ([1], "params must be a JSON object, got list"),
    ({}, "params.url is missing"),
    ({"url": "  "}, "params.url is missing"),
    ({"url": "file:///etc/passwd"}, "params.url must be an http(s) URL, got 'file:///etc/passwd'"),
    ({"url": "ftp://u:pw@h/x"}, "params.url must be an http(s) URL, got 'ftp://***@h/x'"),  # no password
    ({"url": U, "sha256": "abc"}, "params.sha256 must be 64 hex digits"),
    ({"url": U, "sha256": 5}, "params.sha256 must be 64 hex digits"),
    ({"url": U, "size": True}, "params.size must be a positive whole number of bytes, got True"),
    ({"url": U, "size": 0}, "params.size must be a positive whole number of bytes, got 0"),
    ({"url": U, "version": "../x"}, "params.version is not a version string: '../x'"),
    ({"url": U, "sequence": 2**53 + 1}, f"params.sequence must be a positive whole number, got '{2**53 + 1}'"),
    ({"url": U, "sequence": 1.0}, "params.sequence must be a positive whole number, got '1.0'"),
    ({"url": U, "release": "{}"}, "params.release and params.release_signature come together"),
    ({"url": U, "release_signature": "x"}, "params.release and params.release_signature come together"),
    ({"url": U, **SIGNED, "release": 1}, "params.release must be the release.json text (at most 4096 bytes)"),
    ({"url": U, **SIGNED, "release_signature": "x" * 257},
     "params.release_signature must be the base64 text of release.sig"),
    ({"url": U, "release": "{}", "release_signature": "c2ln"},
     "params.release, params.release_signature and params.release_trust come together"),
    ({"url": U, "release_trust": "{}"}, "params.release, params.release_signature and params.release_trust come together"),
    ({"url": U, **SIGNED, "release_trust": 7}, "params.release_trust must be the release-trust.json text"),
    # The first bad field is the one named.
    ({"url": U, "sha256": "abc", "size": 0, "version": "../x"}, "params.sha256 must be 64 hex digits"),
    ({"url": U, "size": 0, "release": "{}"}, "params.size must be a positive whole number of bytes, got 0"),
])
def test_parse_params_refusals(params: Any, message: str) -> None:
    from supervisor.update.verify import parse_params

    with pytest.raises(UpdateRefused) as caught:
        parse_params(params)
    assert str(caught.value) == message


def test_parse_params_normalizes_and_ignores_unknown_keys() -> None:
    from supervisor.update.verify import UpdateParams, parse_params

    sha = "AB" * 32
    got = parse_params({"url": f" {U} ", "sha256": f" {sha} ", "size": 10, "version": " 2.1.0 ", "sequence": 7,
                        **SIGNED, "release_signature": "c2ln\u00e9", "future": 1})
    assert got == UpdateParams(url=U, sha256=sha.lower(), size=10, version="2.1.0", sequence=7, statement=b"{}",
                               signature=b"c2ln?", trust=b"{}")
    assert parse_params({"url": U}) == UpdateParams(url=U)
