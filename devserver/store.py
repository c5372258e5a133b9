"""SQLite-backed task queue of the dev server.

One file can be shared by a running server and `python -m devserver enqueue` in
another process: WAL mode lets readers and one writer overlap, and every
state change runs in a `BEGIN IMMEDIATE` transaction so two claimers never
take the same row.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STATES = ("queued", "claimed", "done")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,          -- JSON, so 7 and "7" stay different
    id_num INTEGER,                 -- the id if it is an integer: default ids continue from the largest
    task_type TEXT NOT NULL,
    params TEXT NOT NULL,           -- JSON
    state TEXT NOT NULL DEFAULT 'queued',
    claimed_at REAL,
    claimed_by TEXT,
    claims INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, seq);
CREATE INDEX IF NOT EXISTS tasks_id ON tasks (task_id);
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT,                   -- JSON as posted
    worker_id TEXT,
    status TEXT,
    result TEXT,                    -- JSON
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS raw_answers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,             -- JSON answer handed out verbatim
    handed_out_at REAL
);
"""


def dumps(value: Any) -> str:
    # Compact and canonical enough that the same id always encodes to the same text.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Store:
    """The queue. Thread-safe (one connection behind a lock) and process-safe (WAL + immediate transactions)."""

    def __init__(self, path: str = ":memory:", requeue_after: float = 300.0) -> None:
        self.path = str(path)
        self.requeue_after = requeue_after
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._connect()

    # -- connection ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            # isolation_level=None: we issue BEGIN ourselves, so the sqlite3 module never opens
            # an implicit deferred transaction that could deadlock against another process.
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    @property
    def is_memory(self) -> bool:
        return self.path == ":memory:"

    def close(self) -> None:
        """Release the file. A later call reopens it, so results stay readable after a server stops."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connect().execute(sql, args).fetchall()

    # -- queue --------------------------------------------------------------

    def enqueue(self, task_type: str, params: Any = None, task_id: Any = None) -> Any:
        """Queue one task and return its id (default: the next integer after the largest integer id)."""
        with self._write() as conn:
            if task_id is None:
                (top,) = conn.execute("SELECT MAX(id_num) FROM tasks").fetchone()
                task_id = (top or 0) + 1
            is_int = isinstance(task_id, int) and not isinstance(task_id, bool) and abs(task_id) < 2**63
            conn.execute(
                "INSERT INTO tasks (task_id, id_num, task_type, params, enqueued_at) VALUES (?, ?, ?, ?, ?)",
                (dumps(task_id), task_id if is_int else None, task_type, dumps({} if params is None else params),
                 time.time()),
            )
        return task_id

    def enqueue_raw(self, obj: Any) -> None:
        """Hand `obj` out verbatim as the answer of the next get_task, ahead of any queued task."""
        with self._write() as conn:
            conn.execute("INSERT INTO raw_answers (body) VALUES (?)", (dumps(obj),))

    def claim(self, worker_id: str | None) -> dict[str, Any] | None:
        """Claim the oldest queued task, after re-queueing claims older than requeue_after with no result."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "UPDATE tasks SET state = 'queued' WHERE state = 'claimed' AND claimed_at <= ?",
                (now - self.requeue_after,),
            )
            row = conn.execute(
                "SELECT seq, task_id, task_type, params FROM tasks WHERE state = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            seq, task_id, task_type, params = row
            conn.execute(
                "UPDATE tasks SET state = 'claimed', claimed_at = ?, claimed_by = ?, claims = claims + 1 WHERE seq = ?",
                (now, worker_id, seq),
            )
        return {"id": json.loads(task_id), "task_type": task_type, "params": json.loads(params)}

    def next_answer(self, worker_id: str | None) -> Any:
        """The JSON value a get_task gets: an injected raw answer, else a task, else no_tasks."""
        with self._write() as conn:
            row = conn.execute("SELECT seq, body FROM raw_answers WHERE handed_out_at IS NULL ORDER BY seq LIMIT 1").fetchone()
            if row is not None:
                conn.execute("UPDATE raw_answers SET handed_out_at = ? WHERE seq = ?", (time.time(), row[0]))
                return json.loads(row[1])
        task = self.claim(worker_id)
        return task if task is not None else {"status": "no_tasks"}

    # -- results ------------------------------------------------------------

    def record_result(self, body: dict[str, Any]) -> None:
        """Keep every POST (duplicates included) and mark the task done."""
        task_id = dumps(body.get("task_id"))
        with self._write() as conn:
            conn.execute(
                "INSERT INTO results (task_id, worker_id, status, result, received_at) VALUES (?, ?, ?, ?, ?)",
                (task_id, _text(body.get("worker_id")), _text(body.get("status")), dumps(body.get("result")), time.time()),
            )
            # Prefer the claimed copy; a late result for a re-queued task still settles it.
            row = conn.execute(
                "SELECT seq FROM tasks WHERE task_id = ? AND state != 'done' ORDER BY state = 'claimed' DESC, seq LIMIT 1",
                (task_id,),
            ).fetchone()
            if row is not None:
                conn.execute("UPDATE tasks SET state = 'done' WHERE seq = ?", row)

    def results(self) -> list[dict[str, Any]]:
        """Every result received, oldest first."""
        rows = self._read("SELECT seq, task_id, worker_id, status, result, received_at FROM results ORDER BY seq")
        return [
            {"seq": seq, "task_id": json.loads(tid), "worker_id": wid, "status": status,
             "result": json.loads(result), "received_at": at}
            for seq, tid, wid, status, result, at in rows
        ]

    def tasks(self) -> list[dict[str, Any]]:
        """Every task with its bookkeeping, oldest first."""
        rows = self._read(
            "SELECT seq, task_id, task_type, params, state, claimed_at, claimed_by, claims, enqueued_at FROM tasks ORDER BY seq"
        )
        keys = ("seq", "task_id", "task_type", "params", "state", "claimed_at", "claimed_by", "claims", "enqueued_at")
        out = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["task_id"] = json.loads(item["task_id"])
            item["params"] = json.loads(item["params"])
            out.append(item)
        return out

    def tally(self) -> list[dict[str, Any]]:
        """Every task, oldest first, with how many times it was handed out and how many results
        (and successes) arrived for it: what a drain test checks (each once: none lost, none doubled)."""
        rows = self._read(
            "SELECT t.task_id, t.claims, COUNT(r.seq), COUNT(CASE WHEN r.status = 'success' THEN 1 END) "
            "FROM tasks t LEFT JOIN results r ON r.task_id = t.task_id GROUP BY t.seq ORDER BY t.seq"
        )
        return [{"id": json.loads(tid), "handed_out": claims, "results": results, "successes": ok}
                for tid, claims, results, ok in rows]

    def counts(self) -> dict[str, int]:
        """Tasks per state, plus `results` (POSTs received) and `raw` (injected answers not yet handed out)."""
        out = dict.fromkeys(STATES, 0)
        out.update(dict(self._read("SELECT state, COUNT(*) FROM tasks GROUP BY state")))
        out["results"] = self._read("SELECT COUNT(*) FROM results")[0][0]
        out["raw"] = self._read("SELECT COUNT(*) FROM raw_answers WHERE handed_out_at IS NULL")[0][0]
        return out


def _text(value: Any) -> str | None:
    # worker_id/status are strings in the protocol, but a broken worker must not break the server.
    if value is None or isinstance(value, str):
        return value
    return dumps(value)
