"""An operator's first day (issue 23): --status tells a live worker from a dead one, Ctrl+C and bad
input end in one line with the usual exit codes. Real workers, real kills, real signals."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import MAIN, ROOT, clean_env, tree_of, wait_for

pytestmark = pytest.mark.slow


def _status(home):
    return subprocess.run([sys.executable, str(MAIN), "--home", str(home), "--status"], cwd=ROOT,
                          env=clean_env(), capture_output=True, text=True, timeout=60)


def test_status_exit_codes_follow_the_process(server, start_worker, tmp_path):
    """0 while it runs; 3 at once when it was killed (status.json is still fresh); 4 where none ran."""
    assert _status(tmp_path / "never").returncode == 4
    w = start_worker(server.url)
    r = wait_for(lambda: (r := _status(w.home)).returncode == 0 and r, 30, what="--status to say running")
    assert f"pid {w.pid}: running" in r.stdout
    w.proc.kill()
    w.proc.wait(10)
    r = _status(w.home)
    assert r.returncode == 3 and "not running: the process is gone" in r.stdout, r.stdout


def test_status_after_a_graceful_stop_is_3(server, start_worker):
    w = start_worker(server.url)
    wait_for(lambda: _status(w.home).returncode == 0, 30, what="--status to say running")
    w.terminate()
    assert w.wait(30) == 0
    r = _status(w.home)
    assert r.returncode == 3 and ": stopped" in r.stdout, r.stdout


def test_ctrl_c_during_run_is_one_line_and_exit_130(start_worker):
    """Issue 23.7: a 15-line KeyboardInterrupt traceback before; the executor is not left behind."""
    w = start_worker(None, args=["--run", "sleep_record", "--params", '{"seconds": 120}'])
    wait_for(lambda: "(sleep_record) started on slot 0" in w.console(), 60, what="the task to start")
    w.interrupt()
    assert w.wait(30) == 130, w.console()
    after = w.console().split("started on slot 0", 1)[1].strip().splitlines()[1:]
    assert after == ["interrupted (Ctrl+C)"], w.console()
    wait_for(lambda: not tree_of(w.pid), 10, what="the executor to end")


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_unusable_home_is_one_line_and_exit_2(tmp_path, where):
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    home = file if where == "a file" else file / "home"
    for mode in (["--self-test"], ["--run", "echo"], []):
        r = subprocess.run([sys.executable, str(MAIN), "--home", str(home), *mode], cwd=ROOT, env=clean_env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (mode, r.stderr)
        assert r.stderr.splitlines() == [r.stderr.strip()] and "as the worker's home" in r.stderr, r.stderr


def test_first_ctrl_c_says_a_second_one_kills_the_running_tasks(server, start_worker):
    """Issue 23.8: the first Ctrl+C waits for running tasks and says how not to wait (as Celery does)."""
    server.enqueue("spin", {}, task_id="spinner")
    # One executor: with a second one idle, a get_task could be under way at the Ctrl+C, and the
    # line rightly counts it too (it may still bring a task): "2 task(s)", seen once in CI.
    w = start_worker(server.url, args=["--pool-size", "1"])
    wait_for(lambda: "started on slot" in w.log(), 20)
    w.interrupt()
    wait_for(lambda: "stopping (" in w.log(), 10, what="the first Ctrl+C to be handled")
    line = next(x for x in w.log().splitlines() if "stopping (" in x)
    assert "1 task(s) get up to 10 s to finish; a second Ctrl+C (or SIGTERM) kills them now" in line, line
    w.interrupt()
    assert w.wait(10) == 0
    assert "killed (second interrupt)" in w.log()

