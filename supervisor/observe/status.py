"""status.json in the home: the worker's health at a glance (``main.py --status`` prints it)."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from common.safetext import loggable, redact_url
from supervisor.store.atomic import atomic_write

STATUS_FILE = "status.json"
STALE_AFTER = 30.0  # seconds without a status.json update after which a live worker counts as hung

# --status exit codes, as `systemctl status` / LSB init scripts and `pg_ctl status` use them.
EXIT_RUNNING = 0  # the worker's process is alive and updated status.json within STALE_AFTER
EXIT_HUNG = 1  # its process is alive but status.json is older than STALE_AFTER: the loop is stuck
EXIT_NOT_RUNNING = 3  # stopped, killed or crashed: no live process wrote this status.json
EXIT_UNKNOWN = 4  # no readable status.json: the worker never ran in this home (or it cannot be read)


@functools.cache
def this_process() -> dict[str, Any]:
    """Who writes status.json: the pid and the process's start time, so --status can tell this
    process from a later one that got the same pid."""
    return {"pid": os.getpid(), "pid_started": psutil.Process().create_time()}


def _same_process_alive(pid: Any, started: Any) -> bool:
    """Whether the process that wrote status.json still runs (psutil; False for a reused pid)."""
    if not isinstance(pid, int):
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and (
            not isinstance(started, (int, float)) or abs(proc.create_time() - started) < 1.0)
    except (psutil.Error, OSError):
        return False


def liveness(data: dict[str, Any], now: float,
             alive: Callable[[Any, Any], bool] = _same_process_alive) -> tuple[int, str]:
    """(exit code, words) for --status from status.json's content: the one place that decides."""
    age = now - (data.get("updated") or 0)
    if data.get("state") == "stopped":
        return EXIT_NOT_RUNNING, f"stopped ({age:.0f} s ago)"
    if not alive(data.get("pid"), data.get("pid_started")):
        return EXIT_NOT_RUNNING, f"not running: the process is gone (killed or crashed; last update {age:.0f} s ago)"
    if age > STALE_AFTER:
        return EXIT_HUNG, f"running but not responding: no status update for {age:.0f} s (hung?)"
    return EXIT_RUNNING, "running"


class Status:
    """Counters and last events, written by several threads; snapshots are taken by the arbiter."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_contact: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.delivered = 0

    def server_ok(self) -> None:
        self.last_contact = time.time()

    def server_error(self, text: str) -> None:
        with self.lock:
            self.last_error, self.last_error_at = redact_url(text), time.time()

    def write(self, home: Path, snapshot: Snapshot) -> None:
        data = snapshot.status_json(updated=time.time())
        atomic_write(home / STATUS_FILE, orjson.dumps(data, option=orjson.OPT_INDENT_2), fsync=False)


@dataclass(frozen=True)
class Snapshot:
    """The worker at one moment, as status.json and worker_diagnostics report it. Built in one
    place (Arbiter.snapshot), on the loop's thread; the readers only format it."""

    taken: float  # monotonic, when it was built
    worker_id: str
    version: str
    server_url: str  # credentials masked (redact_url)
    state: str  # lifecycle.Stage
    slots: list[dict[str, Any]]  # Pool.describe
    outbox_results: int
    outbox_bytes: int
    delivery: dict[str, Any]  # SubmitLoop.describe
    not_claiming: str | None  # why no claim can go out now; None: claiming
    cannot_run_tasks: str | None
    pause: dict[str, Any]  # Guest.state
    cpu_cap: dict[str, Any]  # CpuCap.describe
    # Status's counters, as the claim and submit threads left them:
    last_contact: float | None
    last_error: str | None
    last_error_at: float | None
    results_delivered: int

    def status_json(self, updated: float) -> dict[str, Any]:
        """status.json's content (its keys are read by --status, scripts and tests: keep them)."""
        return {
            "worker_id": self.worker_id, "version": self.version, **this_process(),
            "server_url": self.server_url, "state": self.state, "slots": self.slots,
            "outbox_results": self.outbox_results, "outbox_bytes": self.outbox_bytes, "delivery": self.delivery,
            "claiming": self.not_claiming is None, "not_claiming_because": self.not_claiming,
            "cannot_run_tasks": self.cannot_run_tasks, "pause": self.pause, "cpu_cap": self.cpu_cap,
            "updated": updated, "last_contact": self.last_contact, "last_error": self.last_error,
            "last_error_at": self.last_error_at, "results_delivered": self.results_delivered,
        }


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))} ({now - ts:.0f} s ago)"


def _claiming(data: dict[str, Any]) -> str:
    if "claiming" not in data:  # written by an older version
        return "claiming: unknown"
    return "claiming: yes" if data["claiming"] else f"claiming: no, {data.get('not_claiming_because')}"


def _cap(data: dict[str, Any]) -> list[str]:
    cap = data.get("cpu_cap") or {}
    if not cap.get("percent"):
        return []
    how = cap.get("enforced_by") or f"NOT enforced: {cap.get('not_enforced_because')}"
    return [f"CPU cap: {cap['percent']:g}% of the machine for all executors, {how}"]


def _delivery(data: dict[str, Any]) -> list[str]:
    """Results waiting for a retry or as dead letters, and why (nothing when none wait)."""
    d = data.get("delivery") or {}
    lines = []
    if d.get("retrying"):
        lines.append(f"retrying: {d['retrying']} result(s) ({d.get('refused', 0)} refused by the server), next try in "
                     f"{d.get('next_retry_in')} s; last error: {loggable(str(d.get('retrying_because')))}")
    if d.get("dead_letters"):
        lines.append(f"dead letters: {d['dead_letters']} in outbox-dead/ (retried slowly, never deleted); "
                     f"newest reason: {loggable(str(d.get('dead_letters_because')))}")
    return lines


def render(home: Path) -> str:
    """A readable status report for an operator, from status.json."""
    return report(home)[0]


def report(home: Path) -> tuple[str, int]:
    """(the readable status report, --status's exit code: EXIT_*)."""
    path = home / STATUS_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return f"no status file in {home}: the worker has not run here yet", EXIT_UNKNOWN
    except (OSError, orjson.JSONDecodeError) as exc:
        return f"{path} is unreadable: {exc}", EXIT_UNKNOWN
    now = time.time()
    code, alive = liveness(data, now)
    lines = [
        f"worker {data.get('worker_id')} version {data.get('version')}, pid {data.get('pid')}: {alive}",
        f"server: {data.get('server_url')}",
        f"state: {data.get('state')}",
        _claiming(data),
        *([f"CANNOT RUN TASKS: {loggable(str(data['cannot_run_tasks']))}"] if data.get("cannot_run_tasks") else []),
        *_cap(data),
        f"last server contact: {_ago(data.get('last_contact'), now)}",
        f"last error: {loggable(str(data.get('last_error') or 'none'))}" + (
            f" at {_ago(data.get('last_error_at'), now)}" if data.get("last_error_at") else ""),
        f"outbox: {data.get('outbox_results', 0)} result(s) waiting, {data.get('outbox_bytes', 0)} bytes; "
        f"{data.get('results_delivered', 0)} delivered since start",
        *_delivery(data),
        "slots:",
    ]
    for slot in data.get("slots", []):
        task = slot.get("task")
        doing = f"task {task['id']!r} ({loggable(str(task['task_type']))}) for {task['seconds']:.0f} s" if task else ""
        if slot.get("paused_seconds_left"):
            doing = f"after a failed task, {slot['paused_seconds_left']:.0f} s left (TASK_ERROR_SLEEP)"
        pid = f" pid {slot['pid']}" if slot.get("pid") else ""  # none while its executor is being replaced
        lines.append(f"  #{slot['slot']}: {slot['state']}{pid} tasks done {slot['tasks_done']} {doing}".rstrip())
    return "\n".join(lines), code
