"""Developer mode (issue 7): hot reload with a real watchdog observer, real files, real executors,
bytecode writing enabled; and one-off local runs with --run."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MAIN, ROOT, TEST_CONFIG, clean_env, result_of, wait_for

pytestmark = pytest.mark.slow

BYTECODE_ON = {"PYTHONDONTWRITEBYTECODE": ""}

CONFIG = '''
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from config import *  # noqa
from config import TASK_REGISTRY as _BASE
import mytask
TASK_REGISTRY = dict(_BASE, mytask=mytask.run)
'''

TASK_V1 = '''
import time
def run(sleep=0.0):
    time.sleep(sleep)
    return {"status": "success", "data": "v1"}
'''


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    _write(proj / "devcfg.py", CONFIG)
    _write(proj / "mytask.py", TASK_V1)
    return proj



def _start(start_worker, server, proj, env=None):
    w = start_worker(server.url, args=["--dev", "--config", str(proj / "devcfg.py")], env={**BYTECODE_ON, **(env or {})})
    # Executors import the code at start: edits before they are up would be their first code.
    wait_for(lambda: "dev mode: watching" in w.log() and w.log().count(" ready in ") >= 2, 30)
    return w


def _reloads(w) -> int:
    return w.log().count("reloading: code changed")


def test_edit_reloads_and_running_task_finishes_with_old_code(server, start_worker, tmp_path):
    proj = _project(tmp_path)
    w = _start(start_worker, server, proj)
    server.enqueue("mytask", {"sleep": 2.0}, task_id="long")
    wait_for(lambda: "task 'long' (mytask) started" in w.log(), 20)
    # Same size as v1 and, as far as the .pyc can tell, the same second: a stale .pyc must not win.
    assert list((proj / "__pycache__").glob("mytask.*.pyc")), "bytecode writing must be on for this test"
    before = (proj / "mytask.py").stat()
    _write(proj / "mytask.py", TASK_V1.replace('"v1"', '"v2"'))
    os.utime(proj / "mytask.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    wait_for(lambda: _reloads(w) == 1, 20, what="reload")
    server.enqueue("mytask", {}, task_id="after")
    assert result_of(server, "after")["result"] == "v2"
    assert result_of(server, "long")["result"] == "v1"  # the running task was not cut off


def test_broken_save_keeps_old_executors_and_fix_recovers(server, start_worker, tmp_path):
    proj = _project(tmp_path)
    w = _start(start_worker, server, proj)
    _write(proj / "mytask.py", TASK_V1 + "\ndef broken(:\n")
    wait_for(lambda: "reload refused" in w.log(), 20)
    assert "SyntaxError" in w.log()
    # Issue 23.4: the traceback keeps its lines (indented below the record), as a task's does.
    refused = w.log().split("reload refused", 1)[1].splitlines()
    assert "\\n" not in refused[0], refused[0]
    block = list(itertools.takewhile(lambda line: line.startswith("    "), refused[1:]))
    assert block[0].strip() == "Traceback (most recent call last):" and "SyntaxError" in block[-1], refused[:40]
    server.enqueue("mytask", {}, task_id="during-syntax-error")
    assert result_of(server, "during-syntax-error")["result"] == "v1"
    _write(proj / "mytask.py", "import no_such_module_here\n" + TASK_V1)
    wait_for(lambda: w.log().count("reload refused") == 2, 20)
    assert "No module named 'no_such_module_here'" in w.log()
    server.enqueue("mytask", {}, task_id="during-import-error")
    assert result_of(server, "during-import-error")["result"] == "v1"
    _write(proj / "mytask.py", TASK_V1.replace('"v1"', '"v3"'))
    wait_for(lambda: _reloads(w) == 1, 20)
    server.enqueue("mytask", {}, task_id="fixed")
    assert result_of(server, "fixed")["result"] == "v3"
    assert w.log().count("reload refused") == 2  # each bad save reported once
    assert w.proc.poll() is None


def test_registering_and_removing_a_task(server, start_worker, tmp_path):
    proj = _project(tmp_path)
    w = _start(start_worker, server, proj)
    _write(proj / "newtask.py", "def hello(name):\n    return {'status': 'success', 'data': 'hi ' + name}\n")
    _write(proj / "devcfg.py", CONFIG + "import newtask\nTASK_REGISTRY['hello'] = newtask.hello\n")
    wait_for(lambda: "new tasks: hello" in w.log(), 20)
    server.enqueue("hello", {"name": "dev"}, task_id="h1")
    assert result_of(server, "h1")["result"] == "hi dev"
    _write(proj / "devcfg.py", CONFIG)
    wait_for(lambda: "removed tasks: hello" in w.log(), 20)
    server.enqueue("hello", {"name": "dev"}, task_id="h2")
    r = result_of(server, "h2")
    assert r["status"] == "failure" and r["result"]["kind"] == "unknown_task"


def test_rapid_saves_and_rename_save_cause_one_reload(server, start_worker, tmp_path):
    proj = _project(tmp_path)
    w = _start(start_worker, server, proj)
    for i in range(5):
        _write(proj / "mytask.py", TASK_V1.replace('"v1"', f'"r{i}"'))
        time.sleep(0.02)
    # An editor's save: write a temp/swap file, then rename it over the original.
    _write(proj / ".mytask.py.swp", "swap")
    tmp = proj / "mytask.py.tmp"
    _write(tmp, TASK_V1.replace('"v1"', '"final"'))
    os.replace(tmp, proj / "mytask.py")
    (proj / ".mytask.py.swp").unlink()
    wait_for(lambda: _reloads(w) >= 1, 20)
    # A second reload would start 0.15 s after a late event, long before the new executors are
    # up and serving (an executor starts in ~0.5 s): once they are, the count is final.
    wait_for(lambda: w.log().count(" ready in ") >= 4, 20, what="the reloaded executors")
    server.enqueue("mytask", {}, task_id="x")
    assert result_of(server, "x")["result"] == "final"
    assert _reloads(w) == 1


def test_a_save_in_a_task_helper_package_reloads(server, start_worker, tmp_path):
    # A task split into its module and a helper package (tasks/prom_parser.py and tasks/prom/):
    # a save one folder down, in a module config.py never names, reloads like a save of the task's own.
    proj = _project(tmp_path)
    (proj / "helper").mkdir()
    _write(proj / "helper" / "__init__.py", "")
    _write(proj / "helper" / "answer.py", 'TEXT = "h1"\n')
    _write(proj / "mytask.py", "from helper import answer\ndef run():\n    return {'status': 'success', 'data': answer.TEXT}\n")
    w = _start(start_worker, server, proj)
    server.enqueue("mytask", {}, task_id="before")
    assert result_of(server, "before")["result"] == "h1"
    before = (proj / "helper" / "answer.py").stat()
    _write(proj / "helper" / "answer.py", 'TEXT = "h2"\n')  # same size, same mtime: the stale .pyc must not win
    os.utime(proj / "helper" / "answer.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    wait_for(lambda: _reloads(w) == 1, 20, what="reload")
    server.enqueue("mytask", {}, task_id="after")
    assert result_of(server, "after")["result"] == "h2"


def _run(*args, env=None):
    return subprocess.run([sys.executable, str(MAIN), "--config", str(TEST_CONFIG), *args], cwd=ROOT,
                          env=clean_env(env), capture_output=True, text=True, timeout=120)


def test_run_success_prints_json(tmp_path):
    r = _run("--home", str(tmp_path), "--run", "echo", "--params", '{"a": [1, 2]}')
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout) == {"a": [1, 2]}


def test_run_failure_exit_1_with_kind(tmp_path):
    r = _run("--home", str(tmp_path), "--run", "returns_failure", "--params", '{"message": "nope"}')
    assert r.returncode == 1 and "failed, kind task_failed: nope" in r.stderr


def test_run_limit_breach(tmp_path):
    r = _run("--home", str(tmp_path), "--run", "spin", env={"HIVE_TASK_TIME_LIMIT": "1"})
    assert r.returncode == 1 and "kind time_limit" in r.stderr


def test_run_bad_params(tmp_path):
    # Which params are refused, and why: test_unit_cli.py.
    r = _run("--home", str(tmp_path), "--run", "echo", "--params", "{bad")
    assert r.returncode == 2 and "error: --params is not valid JSON" in r.stderr


def test_graceful_stop_ends_the_dev_worker(server, start_worker, tmp_path):
    """The file watcher is stopped with the worker: on Windows watchdog's directory readers are
    non-daemon threads, and a watcher left running kept the process alive after "stopped"."""
    w = _start(start_worker, server, _project(tmp_path))
    w.terminate()
    assert w.wait(30) == 0, w.console()[-2000:]
    assert "stopped; 0 result(s)" in w.log()


TASK_FAILS = '''
def run(fail=False):
    if fail:
        raise RuntimeError("a bug")
    return {"status": "success", "data": "ok"}
'''


def _status(home):
    return subprocess.run([sys.executable, str(MAIN), "--home", str(home), "--status"], cwd=ROOT,
                          env=clean_env(), capture_output=True, text=True, timeout=60)


def test_dev_reload_ends_the_pause_and_status_shows_time_left(server, start_worker, tmp_path):
    """Issue 23.1: an explicit TASK_ERROR_SLEEP is kept in --dev; --status shows the time left;
    a successful reload ends the pause (the fix is what the author saved)."""
    proj = _project(tmp_path)
    _write(proj / "mytask.py", TASK_FAILS)
    w = start_worker(server.url, args=["--dev", "--config", str(proj / "devcfg.py")],
                     env={"HIVE_TASK_ERROR_SLEEP": "600", "HIVE_POOL_SIZE": "1"})
    wait_for(lambda: "dev mode: watching" in w.log() and " ready in " in w.log(), 30)
    server.enqueue("mytask", {"fail": True}, task_id="bad")
    wait_for(lambda: "slot 0: pausing 600 s after a failed task" in w.log(), 20, what="the pause")
    out = wait_for(lambda: (r := _status(w.home).stdout) and "s left (TASK_ERROR_SLEEP)" in r and r, 20,
                   what="--status to show the pause")
    left = int(out.split("after a failed task, ")[1].split(" s left")[0])
    assert 0 < left <= 600, out
    _write(proj / "mytask.py", TASK_FAILS.replace('"ok"', '"fixed"'))
    wait_for(lambda: "pause after a failed task ended" in w.log(), 20, what="the reload to end the pause")
    server.enqueue("mytask", {}, task_id="good")
    assert result_of(server, "good")["result"] == "fixed"
    # Issue 23.11: the slot's count survives the reload's new executor (it said "tasks done 0").
    wait_for(lambda: "#0: idle pid " in (r := _status(w.home).stdout) and "tasks done 2" in r, 20,
             what="--status to count both tasks")


def test_a_changed_config_setting_says_it_needs_a_restart(server, start_worker, tmp_path):
    """Issue 23.3: a reload applies task code; settings of config.py are read at start, and the log says so."""
    proj = _project(tmp_path)
    w = _start(start_worker, server, proj)
    _write(proj / "devcfg.py", CONFIG + 'TASK_LIMITS = {"mytask": {"time": 5}}\n')
    wait_for(lambda: _reloads(w) == 1, 20, what="reload")
    wait_for(lambda: "config.py now sets TASK_LIMITS differently from when this worker started" in w.log(), 10)
    assert "restart the worker to apply them" in w.log()
    assert "POOL_SIZE" not in w.log().split("config.py now sets", 1)[1].splitlines()[0]


TASK_CHATTY = '''
import logging
def run(fail=False, size=1):
    logging.getLogger(__name__).debug("debug line from the task")
    if fail:
        raise RuntimeError("a bug")
    return {"status": "success", "data": "x" * size}
'''


def test_dev_console_shows_the_author_what_matters(server, start_worker, tmp_path):
    """Issue 23.10: tasks, pool, limits and the log file at start; a preview of each result; the
    task's DEBUG lines but not the supervisor's every-poll chatter; a session summary at stop.
    Issue 23.1: config.py's TASK_ERROR_SLEEP is --dev's 5 s (which value wins: test_unit_settings.py)."""
    proj = _project(tmp_path)
    _write(proj / "mytask.py", TASK_CHATTY)
    w = _start(start_worker, server, proj, env={"HIVE_TASK_ERROR_SLEEP": None})
    console = w.console()
    assert "dev mode: tasks example, get_system_info, mytask, prom_pars; pool of 2;" in console
    assert f"log file {w.home / 'logs' / 'worker.log'}" in console
    assert "dev mode: prom_pars limits: time 1800 s, cpu 300 s, memory 256 MB" in console
    server.enqueue("mytask", {"size": 5}, task_id="small")
    server.enqueue("mytask", {"size": 5000}, task_id="big")
    server.enqueue("mytask", {"fail": True}, task_id="bad")
    for tid in ("small", "big", "bad"):
        result_of(server, tid)
    wait_for(lambda: "task 'big' result:" in w.console(), 10)
    console = w.console()
    assert "task 'small' result: \"xxxxx\"" in console
    big = next(line for line in console.splitlines() if "task 'big' result:" in line)
    assert big.endswith("...") and len(big) < 500, big
    assert "debug line from the task" in console
    wait_for(lambda: "pausing 5 s after a failed task" in w.log(), 10, what="the dev pause")
    wait_for(lambda: w.log().count("no tasks; next poll") >= 2, 10, what="a few polls")  # DEBUG in worker.log ...
    assert "no tasks; next poll" not in w.console()  # ... not on the console
    w.terminate()
    assert w.wait(30) == 0
    assert "dev session: 2 task(s) succeeded, 1 failed (0 killed over a limit); failures by kind: exception 1" \
        in w.console()
