"""The server's JSON read as a standard parser reads it, and the task id echoed byte for byte
(issue 22.4): what get_task's answer means, the result body, and the journal and outbox that carry
a result across a crash. No sockets; the journal and outbox are real files."""

from __future__ import annotations

import orjson
import pytest

from supervisor.model import loads_standard, result_body
from supervisor.net.answers import MalformedTask, classify_task, raw_members
from supervisor.net.claimer import claim_record
from supervisor.store.journal import Journal
from supervisor.store.outbox import Outbox
from supervisor.store.recovery import recover_interrupted

BIG = b"123456789012345678901234567890"  # above 2**64: orjson alone reads 1.2345678901234568e+29


@pytest.mark.parametrize("body, id_json, shown", [
    (b'\xef\xbb\xbf{"id": 7, "task_type": "echo", "params": {}}', b"7", 7),  # a UTF-8 BOM
    (b'{"id": NaN, "task_type": "echo", "params": {}}', b"NaN", None),  # NaN, as Python's json writes it
    (b'{"id": "\\ud83d", "task_type": "echo", "params": {}}', b'"\\ud83d"', '"\\ud83d"'),  # a lone surrogate
    # Beyond what orjson writes: logs and the executor get the id's text.
    (b'{"id": ' + BIG + b', "task_type": "echo", "params": {}}', BIG, BIG.decode()),
    (b'{"id": -' + BIG + b', "task_type": "echo"}', b"-" + BIG, "-" + BIG.decode()),
    (b'{"id": 18446744073709551616, "task_type": "echo"}', b"18446744073709551616", "18446744073709551616"),
    (b'{"id": 1.0E+2, "task_type": "echo"}', b"1.0E+2", 100.0),  # a number's form is kept too
    (b'{"id": "caf\\u00e9", "task_type": "echo"}', b'"caf\\u00e9"', "caf\u00e9"),  # and a string's escapes
    (b'{"params": {"id": 5}, "id" : [' + BIG + b', 1], "task_type": "echo"}', b"[" + BIG + b", 1]", None),
])
def test_every_id_a_standard_parser_reads_is_echoed_byte_for_byte(body, id_json, shown):
    task = classify_task(200, {}, body)
    assert task.task_type == "echo", task
    assert task.id_bytes() == id_json
    if shown is not None:
        assert task.id == shown
    orjson.dumps(task.id)  # what the executor and the journal are given can always be written
    posted = result_body(task.id_bytes(), "w", True, b'{"ok":1}')
    assert posted.startswith(b'{"task_id":' + id_json + b',"worker_id":"w"')


def test_the_usual_ids_take_the_fast_path_and_keep_nothing_extra():
    for raw in (b"7", b'"abc-1"', b"18446744073709551615", b"-9223372036854775808"):
        task = classify_task(200, {}, b'{"id":' + raw + b',"task_type":"echo","params":{}}')
        assert task.id_json is None and task.id_bytes() == raw


def test_what_no_standard_parser_reads_is_still_not_json():
    for body in (b"{'id': 1}", b'{"id": 1,}', b"\xff\xfe{}", b""):
        got = classify_task(200, {}, body)
        assert "answer is not JSON" in str(got), (body, got)


def test_params_no_executor_can_be_sent_fail_the_task_as_bad_params():
    got = classify_task(200, {}, b'{"id": 3, "task_type": "echo", "params": {"s": "\\ud83d"}}')
    assert isinstance(got, MalformedTask) and got.has_id and got.kind == "bad_params"


def test_raw_member_takes_the_last_top_level_member_whatever_nests_inside():
    text = '{"id": 1, "params": {"id": 2, "x": "\\"id\\": 3"}, "id"  :  [4, {"id": 5}] }'
    assert raw_members(text).get("id") == '[4, {"id": 5}]'
    assert raw_members('{"a": 1}').get("id") is None
    assert raw_members("{}").get("id") is None
    with pytest.raises(ValueError):
        raw_members("[1]")


def test_a_result_with_such_an_id_survives_journal_outbox_and_crash_byte_for_byte(tmp_path):
    body = b'{"task_id":' + BIG + b',"worker_id":"w","status":"success","result":{"x":NaN}}'
    journal = Journal(tmp_path)
    journal.result("00000000000000000001-a", body)
    nan_task = classify_task(200, {}, b'{"id": NaN, "task_type": "echo"}')
    journal.record("00000000000000000002-b", claim_record(nan_task))
    journal.close()
    outbox = Outbox(tmp_path, 10**6)
    recover_interrupted(Journal(tmp_path), outbox, "w")
    assert outbox.read(outbox.dir / "00000000000000000001-a.json") == body
    interrupted = outbox.read(outbox.dir / "00000000000000000002-b.json")
    assert interrupted.startswith(b'{"task_id":NaN,') and loads_standard(interrupted)["status"] == "failure"
