"""Helpers shared by the benchmarks in bench/: processes, servers, statistics, the machine.

Every benchmark script prints one JSON object per result row on stdout when run
with ``--json`` (what bench/run.py collects), and a readable line otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MAIN = ROOT / "main.py"
TEST_CONFIG = ROOT / "tests" / "support" / "test_config.py"
BENCH_CONFIG = BENCH / "bench_config.py"
TOKEN_ENV = "HIVE_INTERNAL_TREE_TOKEN"
CORES = os.cpu_count() or 1
MB = 1024 * 1024

for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


# ---- statistics ---------------------------------------------------------------------------------

def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def pct(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    values = sorted(values)
    if not values:
        return float("nan")
    rank = max(0, min(len(values) - 1, round(q / 100 * len(values) + 0.5) - 1))
    return values[rank]


# ---- result rows ----------------------------------------------------------------------------------

def row(part: str, measure: str, ours: float | str | None, unit: str = "", baseline: float | None = None,
        baseline_label: str = "", ratio: float | None = None, target: str = "", met: bool | None = None,
        note: str = "") -> dict[str, Any]:
    """One line of the final table.

    ``ratio`` is ours / baseline; by default the ratio of the two figures, but benchmarks that
    measure both back to back pass the median of the per-repeat ratios instead (robust to drift).
    """
    if ratio is None and isinstance(ours, (int, float)) and isinstance(baseline, (int, float)) and baseline:
        ratio = ours / baseline
    return {"part": part, "measure": measure, "ours": ours, "unit": unit, "baseline": baseline,
            "baseline_label": baseline_label, "ratio": ratio, "target": target, "met": met, "note": note}


def note(part: str, title: str, text: str) -> dict[str, Any]:
    """A block of text for docs/benchmarks.md (e.g. a profile summary)."""
    return {"part": part, "title": title, "text": text}


def emit(rows: list[dict[str, Any]], as_json: bool) -> None:
    for r in rows:
        if "title" in r:
            if as_json:
                print("NOTE " + json.dumps(r), flush=True)
            else:
                print(f"\n## {r['title']}\n{r['text']}\n", flush=True)
        elif as_json:
            print("ROW " + json.dumps(r), flush=True)
        else:
            print(format_row_text(r), flush=True)


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if value != value:  # nan
        return "n/a"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def format_row_text(r: dict[str, Any]) -> str:
    text = f"[{r['part']}] {r['measure']}: {fmt(r['ours'], r['unit'])}"
    if r["baseline"] is not None:
        text += f"  vs {r['baseline_label']} {fmt(r['baseline'], r['unit'])}"
    if r["ratio"] is not None:
        text += f"  (x{r['ratio']:.2f})"
    if r["target"]:
        text += f"  target {r['target']}: {'met' if r['met'] else 'MISSED' if r['met'] is False else '-'}"
    if r["note"]:
        text += f"  [{r['note']}]"
    return text


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the rows)."""
    print(f"  {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# ---- the machine -----------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": CORES,
        "ram_gb": psutil.virtual_memory().total / 2**30,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "virtualised": _hypervisor(),
    }


def _hypervisor() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        if line.startswith("Hypervisor vendor:"):
            return line.split(":", 1)[1].strip()
    return ""


# ---- processes ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (live ones)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def memory(procs: Iterable[psutil.Process]) -> tuple[int, int]:
    """(RSS, USS) summed over the processes, bytes."""
    rss = uss = 0
    for p in procs:
        try:
            m = p.memory_full_info()
        except psutil.Error:
            continue
        rss += m.rss
        uss += m.uss
    return rss, uss


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    for p in reversed(tree(pid)):
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


class DevServer:
    """The local Hive server (devserver/) in its own process, so it has its own GIL.

    ``root``: the checkout whose devserver/ runs (bench_revisions.py gives each revision its own).
    """

    def __init__(self, workdir: Path, root: Path = ROOT) -> None:
        self.db = workdir / "server.sqlite"
        self.log = open(workdir / "devserver.txt", "w+b")
        self.proc = subprocess.Popen([sys.executable, "-m", "devserver", "serve", "--port", "0", "--db", str(self.db)],
                                     cwd=root, env=bench_env(), stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        self.url = ""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            if line.startswith("SERVER_URL="):
                self.url = line.split("=", 1)[1].strip()
                break
        if not self.url:
            self.stop()
            raise RuntimeError("dev server did not start")
        self.conn = sqlite3.connect(str(self.db), timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout=30000")

    def enqueue(self, task_type: str, params: Any, count: int = 1) -> None:
        """Queue ``count`` copies in one transaction (ids continue from the largest)."""
        body = json.dumps(params, separators=(",", ":"))
        now = time.time()
        self.conn.execute("BEGIN IMMEDIATE")
        (top,) = self.conn.execute("SELECT MAX(id_num) FROM tasks").fetchone()
        top = top or 0
        self.conn.executemany(
            "INSERT INTO tasks (task_id, id_num, task_type, params, enqueued_at) VALUES (?, ?, ?, ?, ?)",
            [(str(top + i), top + i, task_type, body, now) for i in range(1, count + 1)])
        self.conn.execute("COMMIT")

    def results(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def last_results(self, n: int) -> list[tuple[str, str, float]]:
        """(task_id, status, received_at) of the last n results."""
        return self.conn.execute("SELECT task_id, status, received_at FROM results ORDER BY seq DESC LIMIT ?",
                                 (n,)).fetchall()

    def claimed_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM tasks WHERE state = 'claimed'").fetchone()[0]

    def timings(self, since_seq: int = 0) -> list[tuple[float, float, float]]:
        """(enqueued_at, claimed_at, received_at) of tasks with a result, for tasks after since_seq."""
        return self.conn.execute(
            "SELECT t.enqueued_at, t.claimed_at, MIN(r.received_at) FROM tasks t JOIN results r ON r.task_id = t.task_id "
            "WHERE t.seq > ? GROUP BY t.seq", (since_seq,)).fetchall()

    def stop(self) -> None:
        if getattr(self, "conn", None) is not None:
            self.conn.close()
            self.conn = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


class HiveWorker:
    """``python main.py`` in its own home, as an operator runs it."""

    def __init__(self, home: Path, server_url: str, config: Path, pool: int, env: dict[str, str] | None = None,
                 patches: str = "", root: Path = ROOT) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.pool = pool
        settings = {"HIVE_POOL_SIZE": str(pool), "HIVE_LOG_LEVEL": "WARNING", "HIVE_NO_TASK_SLEEP": "0.05",
                    "HIVE_TASK_ERROR_SLEEP": "0", "HIVE_TIME_ERROR_SLEEP": "1"}
        settings.update(env or {})
        self.out = open(home / "console.txt", "wb")
        argv = [sys.executable, str(root / "main.py")]  # root: another checkout, to compare against
        if patches:  # experimental supervisor patches, see bench/whatif.py
            argv = [sys.executable, str(BENCH / "whatif.py"), patches, "--"]
        argv += ["--home", str(home), "--server", server_url, "--config", str(config)]
        self.proc = subprocess.Popen(argv, cwd=root, env=bench_env(settings), stdout=self.out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def executors(self) -> list[psutil.Process]:
        """Executor processes (they carry the tree token); the resource tracker does not."""
        out = []
        try:
            children = psutil.Process(self.pid).children()
        except psutil.Error:
            return []
        for p in children:
            try:
                if p.environ().get(TOKEN_ENV):
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def wait_started(self, timeout: float = 120.0) -> None:
        """Until all executors exist and have imported the registry (their RSS stops growing)."""
        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.console()[-2000:]}")
            return len(self.executors()) >= self.pool
        wait_for(up, timeout, "executors to start")

    def console(self) -> str:
        return (self.home / "console.txt").read_text(errors="replace")

    def cpu(self) -> float:
        try:
            t = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return t.user + t.system

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                kill_tree(self.pid)
                self.proc.wait(5)
        self.out.close()


class RedisServer:
    """Debian's redis-server on 127.0.0.1, a free port and its own temp dir; no persistence."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="hive-bench-redis-"))
        self.port = free_port()
        self.log = open(self.dir / "redis.log", "wb")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                                      "--save", "", "--appendonly", "no", "--daemonize", "no",
                                      "--protected-mode", "yes"],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self._ping, 20, "redis-server to answer")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _ping(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("redis-server exited: " + (self.dir / "redis.log").read_text(errors="replace"))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class CeleryWorker:
    """``celery -A celery_app worker --pool prefork -c N`` against a RedisServer."""

    def __init__(self, redis: RedisServer, concurrency: int, workdir: Path) -> None:
        self.concurrency = concurrency
        env = bench_env({"BENCH_REDIS_URL": redis.url, "PYTHONPATH": str(BENCH)})
        self.out = open(workdir / f"celery-{concurrency}.txt", "wb")
        argv = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
                "--concurrency", str(concurrency), "--loglevel", "WARNING", "-n", f"bench{concurrency}@%h"]
        self.proc = subprocess.Popen(argv, cwd=BENCH, env=env, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children()
        except psutil.Error:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                kill_tree(self.pid)
                self.proc.wait(5)
        self.out.close()


def json_arg_parser(description: str):
    import argparse

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and shorter windows")
    ap.add_argument("--json", action="store_true", help="print result rows as JSON lines (for bench/run.py)")
    return ap
