"""The pure parts of supervisor/net: the claim gate, what an answer means, backoff.

No processes, no sockets: each test is a few milliseconds (the wire itself is tests/test_client.py).
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest

from supervisor.model import Claim, Task
from supervisor.net import answers
from supervisor.net.answers import (
    MAX_NESTING,
    NO_TASKS,
    MalformedTask,
    ServerError,
    classify_submit,
    classify_task,
    retry_after,
    snippet,
)
from supervisor.net.backoff import (
    DEAD_MAX_AGE_WINDOWS,
    RESULT_RETRY_CAP,
    Backoff,
    dead_letters_to_retry,
    gives_up,
    jittered,
    result_delay,
    server_away,
)
from supervisor.net.claimer import ClaimGate


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def task_answer(**fields: object) -> bytes:
    return orjson.dumps(fields)


# ---- what get_task's answer means ----------------------------------------------------------------


def test_a_task_keeps_its_id_type_and_params():
    for task_id in (7, "abc-1", 1.5, {"shop": 3}, [1, "x"]):
        got = classify_task(200, {}, task_answer(id=task_id, task_type="echo", params={"a": [1]}))
        assert got == Task(id=task_id, task_type="echo", params={"a": [1]})
    assert classify_task(200, {}, task_answer(id=1, task_type="echo")) == Task(1, "echo", {})  # params optional
    assert classify_task(204, {}, task_answer(id=1, task_type="echo", params=[1])).params == [1]  # any 2xx


def test_no_tasks_is_only_an_answer_without_an_id():
    assert classify_task(200, {}, b'{"status": "no_tasks"}') == NO_TASKS
    assert classify_task(200, {}, b'{"status": "no_tasks", "id": 3, "task_type": "echo"}') == Task(3, "echo", {})


@pytest.mark.parametrize("body, message", [
    (b"", "get_task: answer is not JSON: ''"),
    (b"<html>oops</html>", "get_task: answer is not JSON: '<html>oops</html>'"),
    (b"[1, 2]", "get_task: answer is not a JSON object: '[1, 2]'"),
    (b'"text"', "get_task: answer is not a JSON object: '\"text\"'"),
])
def test_an_answer_that_is_not_a_json_object_is_a_server_error(body, message):
    got = classify_task(200, {}, body)
    assert isinstance(got, ServerError) and str(got) == message
    assert (got.retry_after, got.permanent) == (None, False)


@pytest.mark.parametrize("body", [b'{"task_type": "echo"}', b'{"id": null, "task_type": "echo"}', b"{}"])
def test_a_task_without_an_id_cannot_be_failed_back(body):
    got = classify_task(200, {}, body)
    assert isinstance(got, MalformedTask) and not got.has_id
    assert str(got).startswith("get_task: task without an id: ")


@pytest.mark.parametrize("task_type", [None, "", 5, ["echo"]])
def test_a_task_without_a_usable_type_is_failed_back_as_unknown(task_type):
    fields = {"id": "t", "params": {}} | ({} if task_type is None else {"task_type": task_type})
    got = classify_task(200, {}, orjson.dumps(fields))
    assert isinstance(got, MalformedTask)
    assert (got.task_id, got.has_id, got.kind, got.task_type) == ("t", True, "unknown_task", "")
    assert str(got).startswith("get_task: task 't' has no task_type: ")


def test_nesting_is_bounded_exactly_on_params_and_id():
    fine = classify_task(200, {}, task_answer(id="ok", task_type="echo", params={"x": nested(MAX_NESTING - 1)}))
    assert isinstance(fine, Task)
    deep = classify_task(200, {}, task_answer(id="p", task_type="echo", params={"x": nested(MAX_NESTING)}))
    assert isinstance(deep, MalformedTask)
    assert (deep.task_id, deep.has_id, deep.task_type, deep.kind) == ("p", True, "echo", "bad_params")
    assert str(deep) == "params nested deeper than 64 levels"
    deep_id = classify_task(200, {}, task_answer(id=nested(MAX_NESTING + 1), task_type="echo"))
    assert isinstance(deep_id, MalformedTask) and not deep_id.has_id  # cannot be echoed back
    assert str(deep_id).startswith("get_task: task id nested deeper than 64 levels, cannot answer it: ")


# ---- statuses, shared by both endpoints ----------------------------------------------------------


@pytest.mark.parametrize("status, permanent", [
    (400, True), (401, True), (403, True), (404, True), (410, True), (422, True),
    (408, False), (429, False), (500, False), (502, False), (503, False), (599, False), (100, False),
])
def test_which_statuses_retrying_cannot_fix(status, permanent):
    for got in (classify_task(status, {}, b"no"), classify_submit(status, {}, b"no")):
        assert isinstance(got, ServerError) and got.permanent is permanent, (status, got)
    assert str(classify_task(status, {}, b"no")) == f"get_task: HTTP {status} 'no'"
    assert str(classify_submit(status, {}, b"no")) == f"submit_result: HTTP {status} 'no'"


def test_submit_is_accepted_on_any_2xx_whatever_the_body():
    for status in (200, 201, 202, 204, 299):
        assert classify_submit(status, {}, b"<html>not even json</html>") is None


def test_redirects_are_not_followed_and_name_the_address():
    got = classify_task(301, {"location": "https://hive.example/api/get_task"}, b"")
    assert isinstance(got, ServerError) and not got.permanent and got.retry_after is None
    assert str(got) == ("get_task: HTTP 301 redirect to 'https://hive.example/api/get_task' "
                        "(redirects are not followed: put the final address in SERVER_URL)")
    assert "redirect to None" in str(classify_submit(307, {}, b""))


def test_retry_after_in_seconds_or_as_a_date_is_read_whatever_the_header_case():
    assert classify_task(503, {"Retry-After": "7"}, b"").retry_after == 7.0
    assert classify_submit(429, {"retry-after": "1.5"}, b"").retry_after == 1.5
    assert classify_task(503, {"RETRY-AFTER": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"").retry_after == 0.0  # past
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 100 < classify_task(503, {"Retry-After": soon}, b"").retry_after <= 120
    assert classify_task(503, {"Retry-After": "soon"}, b"").retry_after is None
    assert classify_task(503, {}, b"").retry_after is None


def test_retry_after_is_never_negative_and_ignores_garbage():
    assert retry_after("-5") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == 10.0
    for junk in (None, "", "later", "Wed, 99 Foo"):
        assert retry_after(junk) is None


def test_server_text_in_an_error_is_one_short_line():
    body = b"line one\r\n\x1b[31mred\x1b[0m\n" + b"x" * 500
    text = snippet(body)
    assert "\n" not in text and "\r" not in text and text.endswith("...'") and len(text) < 140
    assert str(classify_task(500, {}, body)).startswith("get_task: HTTP 500 'line one ")
    assert snippet(b"\xff\xfe") == repr("\ufffd\ufffd")  # not UTF-8: replaced, never an exception


# ---- the claim gate ----------------------------------------------------------------------------


def a_claim(n: int) -> Claim:
    return Claim(key=f"k{n}", task=Task(id=n, task_type="echo", params={}))


def test_the_gate_never_holds_more_claims_than_ready_executors():
    woken = []
    gate = ClaimGate(on_claim=lambda: woken.append(1))
    assert not gate.acquire(timeout=0)  # nobody ready
    gate.set_ready(2, None)
    assert gate.acquire(timeout=0) and gate.acquire(timeout=0)
    assert not gate.acquire(timeout=0)  # two GETs under way fill two executors
    assert gate.outstanding() == 2
    gate.release(a_claim(1))
    gate.release(None)  # a GET that brought nothing gives its room back
    assert woken == [1] and gate.outstanding() == 1
    assert gate.acquire(timeout=0) and not gate.acquire(timeout=0)  # the pending claim still counts
    gate.release(None)
    assert gate.take() == a_claim(1) and gate.take() is None
    assert gate.outstanding() == 0


def test_a_hold_stops_claiming_whatever_the_room():
    gate = ClaimGate(on_claim=lambda: None)
    gate.set_ready(4, "draining for an update")
    assert not gate.acquire(timeout=0)
    gate.set_ready(4, None)
    assert gate.acquire(timeout=0)


def test_a_claim_put_back_is_first_in_line():
    gate = ClaimGate(on_claim=lambda: None)
    gate.set_ready(3, None)
    for n in (1, 2):
        assert gate.acquire(timeout=0)
        gate.release(a_claim(n))
    first = gate.take()
    gate.put_back(first)
    assert [gate.take(), gate.take(), gate.take()] == [a_claim(1), a_claim(2), None]


def test_a_waiting_claim_thread_wakes_when_an_executor_gets_ready():
    gate = ClaimGate(on_claim=lambda: None)
    got = []
    waiter = threading.Thread(target=lambda: got.append(gate.acquire(timeout=5)))
    waiter.start()
    gate.set_ready(1, None)
    waiter.join(5)
    assert got == [True] and gate.outstanding() == 1


# ---- backoff -----------------------------------------------------------------------------------


def test_full_jitter_grows_exponentially_and_is_capped():
    b = Backoff(cap=10.0, base=1.0, rng=random.Random(3))
    ceilings = [1, 2, 4, 8, 10, 10, 10]
    delays = [b.failure() for _ in ceilings]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    many = [Backoff(cap=10.0, rng=random.Random(i)) for i in range(200)]
    for bb in many:
        for _ in range(6):
            bb.failure()
    assert max(bb.failure() for bb in many) > 8  # the cap is reached, not just approached
    assert 0 < b.remaining() <= 10


def test_retry_after_is_honoured_and_success_resets():
    b = Backoff(cap=5.0)
    assert b.failure(retry_after=30.0) == 30.0  # the server knows best, even above our cap
    assert 29 < b.remaining() <= 30
    b.success()
    assert b.remaining() == 0 and b.failures == 0
    assert b.failure() <= 1.0  # back to the first step


def test_a_retry_after_is_bounded_and_a_shorter_delay_never_shortens_the_wait():
    b = Backoff(cap=5.0, rng=random.Random(1))
    assert b.failure(retry_after=10 ** 9) == 3600.0  # a server cannot park the worker for years
    b.failure()  # a later, shorter jittered delay
    assert b.remaining() > 3500  # the claim and submit loops share it: the longest wait stands
    assert Backoff(cap=7200.0).failure(retry_after=5000.0) == 5000.0  # a cap above an hour lifts the bound


def test_many_failures_do_not_overflow():
    b = Backoff(cap=60.0, rng=random.Random(0))
    for _ in range(2000):
        assert 0 <= b.failure() <= 60.0


def test_jittered_no_task_sleep_spreads_a_fleet():
    values = [jittered(180, random.Random(i)) for i in range(100)]
    assert min(values) >= 162 and max(values) <= 198 and len(set(values)) > 90
    assert jittered(0) == 0 and jittered(-1) == 0


# ---- an answer over GET_TASK_MAX_BYTES: the id from its first bytes ------------------------------


@pytest.mark.parametrize("head, expected", [
    ('{"id": 5, "task_type": "x", "params": {"a": [1, {"id": 9}]}, "z', {"id": "5", "task_type": '"x"',
                                                                        "params": '{"a": [1, {"id": 9}]}'}),
    ('{"params": {"id": 9, "s": "}\\"]"}, "id": "abc", "task_type": "pr', {"params": '{"id": 9, "s": "}\\"]"}',
                                                                           "id": '"abc"'}),
    (' {"\\u0069d" : 123456789012345678901234567890 , "p":', {"id": "123456789012345678901234567890"}),
    ('{"id": 12', {}),  # the number may go on past the cut
    ('{"id": "ab', {}),
    ("[1, 2]", {}),
    ('{"a" 1}', {}),
    ("", {}),
    ('{"id": {"deep": [', {}),
])
def test_raw_members_of_a_cut_text_are_only_those_that_end_before_the_cut(head, expected):
    assert answers.raw_members(head, cut=True) == expected


def test_the_head_of_an_answer_is_read_as_utf_8_up_to_a_character_the_cut_split():
    assert answers._cut_text(b'\xef\xbb\xbf{"id": "\xc3\xa9"' + "é".encode()[:1]) == '{"id": "é"'
    assert answers._cut_text(b'{"id": 1, "x": "\xff", "y": 2') == ""


def test_an_answer_over_the_cap_is_a_task_to_fail_back_only_with_an_id():
    got = answers.classify_too_large("answer passed GET_TASK_MAX_BYTES=9", b'{"id": 7, "task_type": "prom_pars", "params": {')
    assert isinstance(got, MalformedTask)
    assert (got.task_id, got.has_id, got.task_type, got.kind) == (7, True, "prom_pars", "task_too_large")
    assert "GET_TASK_MAX_BYTES=9" in str(got)
    for head in (b'{"params": {"x": 1', b'{"id": null, "params"', b"   "):
        dropped = answers.classify_too_large("big", head)
        assert isinstance(dropped, ServerError) and "dropped" in str(dropped)


# ---- one result's own schedule (submitter.py) ---------------------------------------------------


def test_a_failed_result_waits_1_2_4_s_up_to_an_hour_never_zero():
    rng = random.Random(7)
    for tries, step in ((1, 1.0), (2, 2.0), (3, 4.0), (12, 2048.0), (13, RESULT_RETRY_CAP), (10**6, RESULT_RETRY_CAP)):
        delays = [result_delay(tries, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays), (tries, min(delays), max(delays))
        assert len(set(delays)) > 100  # jittered: results refused together spread out


def test_only_an_absent_or_overloaded_server_holds_back_everything():
    assert server_away(None)  # no answer: connection refused, reset, timeout
    assert all(server_away(s) for s in (429, 502, 503, 504))
    assert not any(server_away(s) for s in (400, 401, 403, 404, 409, 410, 413, 422, 500, 501))


def test_a_result_is_given_up_only_after_refusals_for_the_whole_window():
    day = 86400.0
    assert not gives_up(404, 1000.0, 1000.0 + 7 * day - 1, 7 * day)
    assert gives_up(404, 1000.0, 1000.0 + 7 * day, 7 * day)
    assert gives_up(500, 0.0, 10 * day, 7 * day)
    assert not gives_up(None, 0.0, 100 * day, 7 * day)  # never for a network that is away
    assert not gives_up(503, 0.0, 100 * day, 7 * day)  # nor for a server that says it is overloaded
    assert not gives_up(400, None, 100 * day, 7 * day)
    assert gives_up(400, 5.0, 5.0, 0.0)  # RESULT_RETRY_DAYS = 0: the first refusal


def test_dead_letters_are_retried_oldest_first_within_their_age_and_size_budget():
    window, now = 100.0, 10_000.0
    too_old = now - DEAD_MAX_AGE_WINDOWS * window
    letters = [("c.json", 10, now), ("a.json", 10, too_old), ("b.json", 10, too_old + 1), ("d.json", 10, now)]
    assert dead_letters_to_retry(letters, now, window, 1000) == ["b.json", "c.json", "d.json"]
    assert dead_letters_to_retry(letters, now, window, 25) == ["b.json", "c.json"]
    assert dead_letters_to_retry(letters, now, window, 5) == []
