"""The write-ahead journal (supervisor/store/outbox.py Journal), its recovery and its flush thread, on real files."""

from __future__ import annotations

import os

import orjson
import pytest
from conftest import wait_for

from supervisor.store.flusher import Flusher
from supervisor.store.journal import Journal
from supervisor.store.outbox import Outbox
from supervisor.store.recovery import recover_interrupted

BODY = b'{"task_id":1,"worker_id":"w","status":"success","result":{"a":[1,2]}}'


def test_claim_result_completion_and_what_a_crash_leaves(tmp_path):
    j = Journal(tmp_path)
    j.record("k1", {"id": 1, "task_type": "echo"})
    j.result("k1", BODY)
    j.record("k2", {"id": 2, "task_type": "echo"})
    assert j.leftovers() == [("k1", {"id": 1, "task_type": "echo"}, BODY), ("k2", {"id": 2, "task_type": "echo"}, None)]
    j.clear("k1")
    size = j.path.stat().st_size
    j.clear("k1")  # a second completion writes nothing
    assert j.path.stat().st_size == size
    assert [k for k, _, _ in j.leftovers()] == ["k2"]
    # The result is stored as JSON inside the record, not as an escaped string.
    assert b'"r":{"task_id":1' in j.path.read_bytes()


def test_compaction_keeps_open_claims_and_results(tmp_path):
    j = Journal(tmp_path)
    j.COMPACT_BYTES = j.compact_at = 2000
    j.record("open", {"id": "open", "task_type": "echo"})
    j.record("posting", {"id": "posting", "task_type": "echo"})
    j.result("posting", BODY)
    for i in range(100):
        j.record(f"k{i:03d}", {"id": i, "task_type": "echo"})
        j.result(f"k{i:03d}", BODY)
        j.clear(f"k{i:03d}")
    assert j.path.stat().st_size < 3000, "the log should have been compacted (it would hold ~14 KB)"
    assert j.leftovers() == [("open", {"id": "open", "task_type": "echo"}, None),
                             ("posting", {"id": "posting", "task_type": "echo"}, BODY)]
    j.clear("posting")  # appending still works after the swap
    assert [k for k, _, _ in j.leftovers()] == ["open"]


def test_recovery_queues_results_and_reports_claims_without_one(tmp_path):
    j = Journal(tmp_path)
    j.record("k1", {"id": 1, "task_type": "echo"})
    j.result("k1", BODY)
    j.record("k2", {"id": "two", "task_type": "echo"})
    j.record("k3", {"id": 3, "task_type": "echo"})
    j.result("k3", BODY)
    j.clear("k3")
    # The process dies here (its handle closes with it, unsynced); the next start opens the same home.
    os.close(j.fd)
    j2, outbox = Journal(tmp_path), Outbox(tmp_path, 1 << 20)
    assert recover_interrupted(j2, outbox, "w") == 1
    assert (tmp_path / "outbox" / "k1.json").read_bytes() == BODY
    interrupted = orjson.loads((tmp_path / "outbox" / "k2.json").read_bytes())
    assert interrupted["task_id"] == "two" and interrupted["result"]["kind"] == "interrupted"
    assert not (tmp_path / "outbox" / "k3.json").exists()
    assert j2.leftovers() == [] and j2.path.stat().st_size == 0


def test_flush_thread_syncs_what_is_written_and_once_more_at_stop(tmp_path):
    j = Journal(tmp_path)
    f = Flusher(j)
    f.start()
    j.record("k1", {"id": 1, "task_type": "echo"})
    assert j.dirty
    f.kick()
    wait_for(lambda: not j.dirty, 10, what="the flush thread to sync")
    j.record("k2", {"id": 2, "task_type": "echo"})  # written, the thread not told: stop() must sync it anyway
    f.stop()
    assert not f.is_alive() and not j.dirty


def test_atomic_write_waits_out_a_reader_holding_the_file(tmp_path):
    """Windows refuses to replace a file another handle holds open (a `--status` reader, an
    antivirus scan): the replace is retried for a moment instead of failing the write."""
    import threading

    from supervisor.store.atomic import atomic_write

    target = tmp_path / "status.json"
    target.write_bytes(b"old")
    opened, release = threading.Event(), threading.Event()

    def reader():
        with open(target, "rb"):
            opened.set()
            release.wait(5)

    t = threading.Thread(target=reader)
    t.start()
    opened.wait(5)
    threading.Timer(0.15, release.set).start()
    atomic_write(target, b"new")
    t.join()
    assert target.read_bytes() == b"new"


def test_a_write_error_is_named_as_it_is():
    import errno

    from supervisor.store.diskguard import describe

    assert describe(OSError(errno.ENOSPC, "No space left on device", "/h/outbox/1.json.tmp")) == \
        "disk full: ENOSPC: No space left on device: '/h/outbox/1.json.tmp'"
    assert describe(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/h/outbox/1.json.tmp")) == \
        "disk not writable: ENOTDIR: Not a directory: '/h/outbox/1.json.tmp'"
    assert describe(OSError(errno.ENOSPC, "short write to the journal (3 of 9 bytes)")).startswith("disk full: ENOSPC")
    assert describe(OSError("no errno at all")) == "disk not writable: OSError: no errno at all"


def test_store_writes_make_a_deleted_folder_again(tmp_path):
    from supervisor.store.atomic import atomic_write, replace
    from supervisor.store.diskguard import DiskGuard

    outbox = Outbox(tmp_path, 10**6)
    outbox.dir.rmdir()
    outbox.put("k1", b'{"task_id": 1, "status": "success"}')
    assert [p.name for p in outbox.dir.iterdir()] == ["k1.json"]
    (tmp_path / "gone").mkdir()
    atomic_write(tmp_path / "gone" / "f", b"1")
    (tmp_path / "gone" / "f").rename(tmp_path / "f")
    (tmp_path / "gone").rmdir()
    replace(tmp_path / "f", tmp_path / "gone" / "f")  # moved aside into a folder someone deleted
    assert (tmp_path / "gone" / "f").read_bytes() == b"1"
    guard = DiskGuard(tmp_path / "journal", probe_every=0)
    guard.failed(FileNotFoundError(2, "No such file or directory", str(tmp_path / "journal" / "x")), "kept")
    assert guard.writable() and (tmp_path / "journal").is_dir()  # the test write made it again


@pytest.mark.skipif(os.name == "nt", reason="Windows refuses to delete a folder holding an open file")
def test_a_journal_deleted_under_the_worker_is_written_again_at_the_next_sync(tmp_path):
    import shutil

    journal = Journal(tmp_path)
    journal.record("k1", {"id": "running", "task_type": "x", "params": {}})
    journal.result("k2", b'{"task_id": "done", "status": "success"}')
    shutil.rmtree(tmp_path / "journal")
    journal.sync()
    assert {key for key, _, _ in journal.leftovers()} == {"k1", "k2"}
    journal.clear("k1")
    journal.close()
    assert [key for key, _, _ in Journal(tmp_path).leftovers()] == ["k2"]  # appends reach the new file
