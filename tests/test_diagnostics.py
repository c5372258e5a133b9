"""worker_diagnostics' parts (supervisor/observe/diagnostics.py), the disk check, the cap's arithmetic, --status."""

from __future__ import annotations

import logging

import orjson
import pytest

import config
from supervisor.arbiter import build_arbiter
from supervisor.observe import diagnostics, status
from supervisor.pool.cpucap import PERIOD_US, group_weight, quota_us
from supervisor.settings import load


@pytest.mark.parametrize("text, secret", [
    ("proxy http://bob:hunter2@proxy:3128 refused", "hunter2"),
    ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
    ("sent basic QWxhZGRpbjpvcGVuIHNlc2FtZQ== to the proxy", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
    ("url http://h/api?token=s3cr3t&x=1", "s3cr3t"),
    ('{"password": "pa55word"}', "pa55word"),
    ("api_key=XYZ123 and secret: shh", "XYZ123"),
])
def test_redact_removes_credentials(text, secret):
    out = diagnostics.redact(text)
    assert secret not in out and "***" in out


def test_redact_keeps_ordinary_text():
    text = "task 'a1' (prom_pars) failed in 2.00 s, kind time_limit: http://127.0.0.1:3010/api"
    assert diagnostics.redact(text) == text


def test_log_tail_keeps_warnings_one_line_each_clipped_and_redacted():
    tail = diagnostics.LogTail()
    logger = logging.getLogger("hive.test_tail")
    logger.addHandler(tail)
    try:
        logger.info("not kept")
        for i in range(diagnostics.LOG_LINES + 5):
            logger.warning("warning %d %s", i, "x" * 5000)
        try:
            raise ValueError("the cause\nwith password=hunter2")
        except ValueError:
            logger.exception("boom with token=abc")
    finally:
        logger.removeHandler(tail)
    lines = list(tail.lines)
    assert len(lines) == diagnostics.LOG_LINES
    assert all(len(ln) <= diagnostics.LINE_MAX and "\n" not in ln for ln in lines)
    assert "warning 6 " in lines[0]  # the oldest ones went
    assert "boom with token=***" in lines[-1] and "password=***" in lines[-1] and "hunter2" not in lines[-1]
    assert "not kept" not in "".join(lines)


@pytest.fixture
def make_arbiter(tmp_path):
    """A real Arbiter, never run: its state is what diagnostics reads."""
    made = []

    def make(**env):
        home = tmp_path / f"home{len(made)}"
        home.mkdir()
        settings = load(config, home, {}, environ={"HIVE_SERVER_URL": "http://u:pw@127.0.0.1:9/api", **env})
        made.append(build_arbiter(settings, "worker_test", "9.9.9", set()))
        return made[-1]

    yield make
    for arb in made:
        arb.journal.close()  # Windows cannot remove the home while the journal is open


def test_answer_is_bounded_and_keeps_the_essentials(make_arbiter):
    arb = make_arbiter()
    for _ in range(diagnostics.LOG_LINES):
        arb.health.tail.lines.append("y" * diagnostics.LINE_MAX)
    arb.health.failed("time_limit")
    arb.health.failed(None)
    data = orjson.loads(diagnostics.answer(arb.snapshot(), arb.settings, arb.health, arb.outbox))
    assert data["version"] == "9.9.9" and data["server"]["url"] == "http://***@127.0.0.1:9/api"  # the one mask (safetext.redact_url)
    assert data["failures"]["since_start"] == {"time_limit": 1, "unknown": 1}
    assert len(data["log"]) == diagnostics.LOG_LINES and "log_truncated" not in data
    # A table of limits far over the bound: the answer still fits and says it was cut.
    huge = "\n".join(f"t{i} = {{time = {i}}}" for i in range(6000))
    arb = make_arbiter(HIVE_TASK_LIMITS=huge)
    raw = diagnostics.answer(arb.snapshot(), arb.settings, arb.health, arb.outbox)
    data = orjson.loads(raw)
    assert len(raw) <= diagnostics.MAX_BYTES and data["truncated"] is True and data["version"] == "9.9.9"


def test_quota_is_a_share_of_the_whole_machine():
    assert quota_us(50, 2) == PERIOD_US  # half of two CPUs: one CPU's worth
    assert quota_us(25, 8) == 2 * PERIOD_US
    assert quota_us(0.001, 1) == 1000  # the kernel's minimum


def test_group_weight_is_what_the_executors_weighed_alone():
    assert group_weight("below_normal", 3) == 3 * 110  # three nice-10 processes
    assert group_weight("normal", 2) == 2048 and group_weight("idle", 1) == 15
    assert group_weight("below_normal", 3, autogroup_nice=0) == 1024  # one session's autogroup at nice 0
    assert group_weight("normal", 1, autogroup_nice=25) == 15


def test_status_render_says_why_not_claiming(tmp_path):
    (tmp_path / "status.json").write_bytes(orjson.dumps({
        "state": "running", "claiming": False, "not_claiming_because": "paused: on battery",
        "cpu_cap": {"percent": 40.0, "enforced_by": None, "not_enforced_because": "no cgroup"}}))
    out = status.render(tmp_path)
    assert "claiming: no, paused: on battery" in out
    assert "CPU cap: 40% of the machine for all executors, NOT enforced: no cgroup" in out
    (tmp_path / "status.json").write_bytes(orjson.dumps({"state": "running"}))
    assert "claiming: unknown" in status.render(tmp_path)
