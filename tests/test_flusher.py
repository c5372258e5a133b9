"""supervisor/flusher.py with a real journal and outbox on disk: completion records only after the
result's file is flushed, a failed flush keeps its batch, the thread wakes on every write."""

from __future__ import annotations

import shutil

from conftest import wait_for

from supervisor.flusher import Flusher
from supervisor.outbox import Journal, Outbox


def _parts(tmp_path):
    journal = Journal(tmp_path)
    outbox = Outbox(tmp_path, 1 << 20)
    return journal, outbox, Flusher(journal, outbox)


def test_completion_is_recorded_only_after_the_result_file_is_flushed(tmp_path):
    journal, outbox, flusher = _parts(tmp_path)
    journal.record("k1", {"id": 1, "task_type": "echo"})
    outbox.put("k1", b'{"task_id": 1, "status": "success"}', durable=False)
    flusher.result_written("k1")
    # Written, not flushed: recovery must still see the claim (its result file may not survive a power cut).
    assert [k for k, _ in journal.leftovers()] == ["k1"]
    flusher.flush()
    assert journal.leftovers() == []
    assert (tmp_path / "outbox" / "k1.json").exists()


def test_a_failed_flush_keeps_its_batch_and_the_claim_open(tmp_path):
    journal, outbox, flusher = _parts(tmp_path)
    journal.record("k2", {"id": 2, "task_type": "echo"})
    outbox.put("k2", b'{"task_id": 2, "status": "success"}', durable=False)
    flusher.result_written("k2")
    moved = tmp_path / "outbox-away"
    shutil.move(tmp_path / "outbox", moved)  # the directory fsync now fails
    try:
        flusher.flush()
    except OSError:
        pass
    else:
        raise AssertionError("a flush of a missing outbox folder should fail")
    assert [k for k, _ in journal.leftovers()] == ["k2"]
    shutil.move(moved, tmp_path / "outbox")
    flusher.flush()
    assert journal.leftovers() == []


def test_a_delivered_result_needs_no_file_and_is_recorded_once(tmp_path):
    journal, outbox, flusher = _parts(tmp_path)
    journal.record("k3", {"id": 3, "task_type": "echo"})
    path = outbox.put("k3", b'{"task_id": 3, "status": "success"}', durable=False)
    flusher.result_written("k3")
    outbox.delivered(path)
    journal.clear("k3")  # what the submit thread does after a 2xx
    flusher.flush()
    records = (tmp_path / "journal" / "claims.jsonl").read_bytes().splitlines()
    assert len(records) == 2 and b'"done":true' in records[1]
    assert journal.leftovers() == []


def test_the_thread_flushes_each_write_and_stops_with_a_last_flush(tmp_path):
    journal, outbox, flusher = _parts(tmp_path)
    flusher.start()
    journal.record("k4", {"id": 4, "task_type": "echo"})
    outbox.put("k4", b'{"task_id": 4, "status": "success"}', durable=False)
    flusher.result_written("k4")
    wait_for(lambda: not journal.leftovers(), 10, what="the flush thread to record completion")
    journal.record("k5", {"id": 5, "task_type": "echo"})
    outbox.put("k5", b'{"task_id": 5, "status": "success"}', durable=False)
    flusher.written.append("k5")  # written, but the thread not woken: stop() must flush it anyway
    flusher.stop()
    assert not flusher.is_alive()
    assert journal.leftovers() == []
