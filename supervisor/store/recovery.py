"""After a crash: a result left in the journal is queued in the outbox, and a claim
without a result becomes a failure of kind "interrupted" (nothing the worker claimed is lost)."""

from __future__ import annotations

import logging

import orjson

from common.vocabulary import FailureKind, failure_json
from supervisor.model import result_body
from supervisor.store.journal import Journal
from supervisor.store.outbox import Outbox

log = logging.getLogger("hive.outbox")


def recover_interrupted(journal: Journal, outbox: Outbox, worker_id: str) -> int:
    """Queue results a crash left in the journal and turn claims without a result into
    "interrupted" failures, all in the outbox; then start a fresh journal."""
    have = outbox.keys()
    count = 0
    for key, task, body in journal.leftovers():
        if key in have:
            continue  # its result made it to the outbox before the crash
        if body is not None:
            outbox.put(key, body)
            log.info("result %s from the last run was not posted yet; queued in the outbox", key)
            continue
        if not isinstance(task, dict) or "id" not in task:
            log.error("journal: claim %s is unreadable; cannot report it", key)
            continue
        text = "the worker stopped (crash, kill or power cut) while this task ran"
        id_json = task["id_json"].encode("utf-8") if isinstance(task.get("id_json"), str) else orjson.dumps(task["id"])
        body = result_body(id_json, worker_id, False, failure_json(text, FailureKind.INTERRUPTED))
        outbox.put(key, body)
        log.warning("task %s (%s) was interrupted by the last stop; reporting failure kind interrupted",
                    task["id"], task.get("task_type"))
        count += 1
    journal.reset()
    return count
