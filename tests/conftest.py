"""Shared test harness: a real dev server on 127.0.0.1 and real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.vocabulary import TOKEN_ENV  # noqa: E402

MAIN = ROOT / "main.py"
WINDOWS = os.name == "nt"
IN_WINE = WINDOWS and os.environ.get("WINE_LANE") == "1"  # set by .ci/windows

if WINDOWS:
    # A worker's graceful stop on Windows is Ctrl+C in its console. The only Ctrl+C that Wine
    # (and a console-less GitHub runner) can deliver is the console-wide one, which reaches
    # pytest too: pytest ignores it (.ci/windows bounds the run from outside instead).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


if os.environ.get("HIVE_COUNT_SPAWNS"):  # which tests start processes (tests/support/spawncount.py)
    pytest_plugins = ["support.spawncount"]


def pytest_configure(config: pytest.Config) -> None:
    # The Windows lane runs without pytest-timeout (its thread method would end the whole run).
    config.addinivalue_line("markers", "timeout(seconds): pytest-timeout's per-test limit")


def console_ctrl_c() -> None:
    """Ctrl+C to every process of this console, as a person pressing it would send."""
    import ctypes

    if not ctypes.windll.kernel32.GenerateConsoleCtrlEvent(0, 0):  # CTRL_C_EVENT, whole console
        pytest.skip(f"no console to deliver Ctrl+C to (WinError {ctypes.GetLastError()}): "
                    "run the lane with a terminal (.ci/windows gives it one)")
TEST_CONFIG = ROOT / "tests" / "support" / "test_config.py"

FAST_ENV = {
    "HIVE_NO_TASK_SLEEP": "0.2",
    "HIVE_TIME_ERROR_SLEEP": "0.5",
    "HIVE_TASK_ERROR_SLEEP": "0",
    "HIVE_POOL_SIZE": "2",
    "HIVE_LOG_LEVEL": "DEBUG",
    "HIVE_SHUTDOWN_GRACE": "10",
}


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def clean_env(extra: dict[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a worker under test: FAST_ENV, then ``extra`` (a None value removes a variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(FAST_ENV)
    env.update(extra or {})
    return {k: v for k, v in env.items() if v is not None}


def tree_of(supervisor_pid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes started by this supervisor's executors, found by tree token."""
    found = []
    for proc in psutil.process_iter():
        try:
            token = proc.environ().get(TOKEN_ENV, "")
            if token.startswith(f"{supervisor_pid}-") and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


class Worker:
    """A worker started as `python main.py` in its own home, like an operator would."""

    def __init__(self, home: Path, server_url: str | None, args: list[str] | None = None,
                 env: dict[str, str] | None = None, cmd: list[str] | None = None) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.out_path = home / "console.txt"
        argv = list(cmd or [sys.executable, str(MAIN)]) + ["--home", str(home)]
        if cmd is None:
            argv += ["--config", str(TEST_CONFIG)]
        if server_url:
            argv += ["--server", server_url]
        argv += args or []
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=str(ROOT), env=clean_env(env), stdout=self.out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def console(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def log(self) -> str:
        path = self.home / "logs" / "worker.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        """The operator's graceful stop: SIGTERM on POSIX (systemd), Ctrl+C on Windows (on
        Windows a SIGTERM is TerminateProcess, a hard kill)."""
        console_ctrl_c() if WINDOWS else self.proc.send_signal(signal.SIGTERM)

    def interrupt(self) -> None:
        """Ctrl+C, as typed into the worker's console."""
        console_ctrl_c() if WINDOWS else self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def executors(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children()
        except psutil.Error:
            return []

    def wait_ready(self, count: int = 2, timeout: float = 30.0) -> None:
        wait_for(lambda: len([p for p in tree_of(self.pid)]) >= count or self.proc.poll() is not None,
                 timeout, what="executors to start")
        assert self.proc.poll() is None, self.console()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for p in tree_of(self.pid):
            try:
                p.kill()
            except psutil.Error:
                pass
        self.out.close()


@pytest.fixture
def server(tmp_path: Path):
    from devserver import HiveDevServer

    srv = HiveDevServer(str(tmp_path / "server.sqlite")).start()
    yield srv
    srv.stop()


@pytest.fixture
def start_worker(tmp_path: Path):
    workers: list[Worker] = []

    def start(server_url: str | None = None, args: list[str] | None = None, env: dict[str, str] | None = None,
              home: Path | None = None, cmd: list[str] | None = None) -> Worker:
        w = Worker(home or tmp_path / f"home{len(workers)}", server_url, args, env, cmd)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


def results_by_id(server: Any) -> dict[Any, list[dict]]:
    out: dict[Any, list[dict]] = {}
    for r in server.results():
        out.setdefault(r["task_id"], []).append(r)
    return out


def result_of(server: Any, task_id: Any, timeout: float = 30.0, last: bool = False) -> dict:
    """The first result the server holds for ``task_id`` (the latest with ``last``), waited for."""
    got = wait_for(lambda: results_by_id(server).get(task_id), timeout, what=f"the result of task {task_id!r}")
    return got[-1] if last else got[0]


def results_for(server: Any, ids: Any, timeout: float = 30.0) -> dict[Any, list[dict]]:
    """Every result by task id, once each of ``ids`` has at least one."""
    def all_in() -> dict[Any, list[dict]] | None:
        got = results_by_id(server)
        return got if all(i in got for i in ids) else None
    return wait_for(all_in, timeout, what=f"a result for each of {list(ids)!r}")
