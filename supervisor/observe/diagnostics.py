"""The built-in ``worker_diagnostics`` task: the worker's health, answered by the supervisor.

The server can only send task types it knows by name, and a worker answers only the
types in its TASK_REGISTRY, so this one is recognised by name in the arbiter (like
``update_worker``) and never reaches an executor: it answers even when every executor
is broken. An operator enqueues it (no params) for one PC or the whole fleet.
The answer is bounded (MAX_BYTES) and carries no credentials.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import orjson
import psutil

from common.safetext import redact_url

if TYPE_CHECKING:
    from supervisor.observe.status import Snapshot
    from supervisor.settings import Settings
    from supervisor.store.outbox import Outbox

TASK_TYPE = "worker_diagnostics"
LOG_LINES = 50  # the last warnings and errors kept for the answer
LINE_MAX = 400  # characters per log line in the answer
MAX_BYTES = 64 * 1024  # the whole answer; log lines are dropped, oldest first, to fit
KILL_WINDOW = 3600.0  # "recent" failures: the last hour

_SECRETS = (
    (re.compile(r"(?i)\b(authorization|proxy-authorization)\s*[:=]\s*\S+(\s+\S+)?"), r"\1: ***"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)(['\"]?\s*[:=]\s*['\"]?)"
                r"[^\s'\",;&]+"), r"\1\2***"),
)


def redact(text: str) -> str:
    """Credentials out of a text that may leave the machine (URLs as everywhere else, tokens, headers)."""
    text = redact_url(text)
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def _clip(text: str) -> str:
    if len(text) <= LINE_MAX:
        return text
    return text[:LINE_MAX - 120] + " [...] " + text[-113:]


class LogTail(logging.Handler):
    """The last LOG_LINES warning/error lines of the hive loggers, one line each, redacted."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a bad format argument must not break logging
            text = f"{record.levelname} {record.name}: {record.msg!r}"
        # A traceback becomes its first line and its last (the exception): one line per record.
        lines = [ln for ln in text.splitlines() if ln.strip()]
        one = lines[0] if len(lines) < 2 else f"{lines[0]} | {lines[-1].strip()}"
        self.lines.append(_clip(redact(one)))


class Health:
    """What the supervisor remembers for diagnostics: start time, failures by kind, the log tail."""

    def __init__(self) -> None:
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.kinds: Counter[str] = Counter()
        self.recent: deque[tuple[float, str]] = deque(maxlen=1000)
        self.tail = LogTail()
        self.logger = logging.getLogger("hive")

    def install(self) -> None:
        self.logger.addHandler(self.tail)

    def uninstall(self) -> None:
        self.logger.removeHandler(self.tail)

    def failed(self, kind: str | None) -> None:
        kind = str(kind) if kind else "unknown"  # a plain str: orjson takes no FailureKind as a key
        self.kinds[kind] += 1
        self.recent.append((time.monotonic(), kind))

    def failures(self, now: float) -> dict[str, Any]:
        last = Counter(k for t, k in self.recent if now - t <= KILL_WINDOW)
        return {"since_start": dict(self.kinds), "last_hour": dict(last)}


def _platform() -> dict[str, Any]:
    try:
        memory = psutil.virtual_memory().total
    except Exception:  # noqa: BLE001 - informational only
        memory = None
    return {"system": platform.system(), "release": platform.release(), "version": platform.version(),
            "platform": platform.platform(), "machine": platform.machine(), "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(), "memory_bytes": memory, "frozen": bool(getattr(sys, "frozen", False)),
            "hostname": platform.node()}


def _outbox(snap: Snapshot, outbox: Outbox) -> dict[str, Any]:
    oldest = outbox.oldest()
    age = None
    if oldest is not None:
        try:
            age = round(time.time() - oldest.stat().st_mtime, 1)
        except OSError:
            age = None
    return {"results": snap.outbox_results, "bytes": snap.outbox_bytes, "oldest_age_seconds": age,
            "max_bytes": outbox.max_bytes}


def collect(snap: Snapshot, settings: Settings, health: Health, outbox: Outbox) -> dict[str, Any]:
    """The answer, as a dict: status.json's snapshot plus what only diagnostics tells."""
    now = snap.taken
    s = settings
    limits = {"task_time_limit": s.task_time_limit, "task_cpu_limit": s.task_cpu_limit,
              "task_memory_limit_mb": s.task_memory_limit_mb, "task_limits": s.task_limits,
              "result_max_bytes": s.result_max_bytes, "max_tasks_per_executor": s.max_tasks_per_executor}
    return {
        "worker_id": snap.worker_id, "version": snap.version, "pid": os.getpid(),
        "state": snap.state, "started": health.started,
        "uptime_seconds": round(now - health.started_mono, 1),
        "claiming": snap.not_claiming is None, "not_claiming_because": snap.not_claiming,
        "cannot_run_tasks": snap.cannot_run_tasks,
        "pause": snap.pause, "cpu_cap": snap.cpu_cap,
        "pool": {"size": len(snap.slots), "slots": snap.slots},
        "limits": limits, "failures": health.failures(now),
        "outbox": _outbox(snap, outbox), "delivery": snap.delivery,
        "server": {"url": redact(s.server_url), "last_contact": snap.last_contact,
                   "last_error": redact(snap.last_error or "") or None,
                   "results_delivered": snap.results_delivered},
        "platform": _platform(),
        "log": list(health.tail.lines),
    }


def answer(snap: Snapshot, settings: Settings, health: Health, outbox: Outbox) -> bytes:
    """The JSON result, at most MAX_BYTES: log lines go first (oldest first) when it is too big."""
    data = collect(snap, settings, health, outbox)
    raw = orjson.dumps(data)
    while len(raw) > MAX_BYTES and data["log"]:
        data["log"] = data["log"][len(data["log"]) // 2 + 1:] if len(data["log"]) > 1 else []
        data["log_truncated"] = True
        raw = orjson.dumps(data)
    if len(raw) > MAX_BYTES:  # e.g. a huge TASK_LIMITS table: keep the essentials
        data = {k: data[k] for k in ("worker_id", "version", "state", "uptime_seconds", "claiming",
                                     "not_claiming_because", "cannot_run_tasks", "outbox", "delivery", "failures",
                                     "platform")}
        data["truncated"] = True
        raw = orjson.dumps(data)
    return raw
