"""Nothing from the network or the disk can stop, crash or bloat the worker (issue 14).

Real misbehaving HTTP servers on 127.0.0.1 (devserver faults, Fault.raw writing the bytes a
broken server or proxy would), the real worker process, and for the full disk a real tmpfs.
Each worker test checks the supervisor's RSS stayed bounded, that it still claims afterwards
and that no task or result was lost.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest
from conftest import MAIN, TEST_CONFIG, clean_env, results_by_id, wait_for

from common.safetext import loggable, redact_url
from devserver import Fault, HiveDevServer
from supervisor.host.identity import IdentityError, load_or_create_worker_id
from supervisor.host.logs import FORMAT, SafeFormatter
from supervisor.net import client as client_mod
from supervisor.net.client import HiveClient, MalformedTask, ServerError, too_deep

MB = 1024 * 1024
HOSTILE_ENV = {"HIVE_POOL_SIZE": "1", "HIVE_LOG_LEVEL": "INFO", "HIVE_TIME_ERROR_SLEEP": "0.3",
               "HIVE_GET_TASK_TIMEOUT": "2", "HIVE_SUBMIT_TIMEOUT": "2", "HIVE_GET_TASK_MAX_BYTES": str(MB)}
RSS_HEADROOM = 80 * MB  # over the supervisor's RSS before the hostile answers; the streams below are far larger


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


# ---- what the hostile servers send --------------------------------------------------------------


def endless_chunked(limit: int = 600 * MB):
    """200, chunked, a body that never ends (up to ``limit``, so a broken worker cannot hang the test)."""
    def stream(stopping: threading.Event) -> Iterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"%x\r\n%s\r\n" % (MB, b" " * MB)
        for _ in range(limit // MB):
            yield chunk
    return stream


def huge_length(announced: int = 100 * 1024**3):
    """A Content-Length of 100 GB, then a trickle of body."""
    def stream(stopping: threading.Event) -> Iterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % announced
        while not stopping.wait(0.2):
            yield b" " * 1024
    return stream


def trickle(seconds: float = 60.0):
    """A valid answer at one byte a second (stops after ``seconds``)."""
    def stream(stopping: threading.Event) -> Iterator[bytes]:
        body = b'{"status": "no_tasks"}' + b" " * 1000
        yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        deadline = time.monotonic() + seconds
        for i in range(len(body)):
            if stopping.wait(1.0) or time.monotonic() > deadline:
                return
            yield body[i:i + 1]
    return stream


class RssWatch:
    """The supervisor's largest RSS, sampled every 20 ms while the test runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.02):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self.done.set()
        self.thread.join(5)
        return self.peak


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def started(w) -> int:
    """Wait until the worker talked to the server once; its supervisor's RSS then."""
    wait_for(lambda: "no tasks on the server" in w.log() or w.proc.poll() is not None, 30, what="first poll")
    assert w.proc.poll() is None, w.console()
    return rss(w.pid)


def assert_still_serving(server, w, task_id: str) -> None:
    """A fresh task is claimed, run and posted: the worker did not lose its slot."""
    server.enqueue("echo", {"after": task_id}, task_id=task_id)
    wait_for(lambda: task_id in results_by_id(server), 40, what=f"{task_id} to be served")
    assert results_by_id(server)[task_id][0]["status"] == "success"
    assert w.proc.poll() is None, w.console()


# ---- pure pieces ---------------------------------------------------------------------------------


def test_nesting_limit_is_exact_and_iterative():
    assert not too_deep(nested(64))
    assert too_deep(nested(65))
    assert not too_deep({"a": [1, {"b": "x"}], "c": 3})
    assert not too_deep("text") and not too_deep(7)
    assert too_deep(nested(100_000))  # no RecursionError however deep


def test_loggable_escapes_every_line_break_and_terminal_escape():
    assert loggable("a\nb\r\x1b[31mc\x85\u2028d\te") == "a\\nb\\r\\x1b[31mc\\x85\\u2028d\\te"
    assert loggable("é ж ok") == "é ж ok"
    assert loggable("x" * 50, 10) == "x" * 10 + "..."


def test_log_formatter_escapes_every_argument_and_traceback():
    formatter = SafeFormatter(FORMAT)
    evil = "x\n2026-12-01 00:00:00,000 INFO    hive.supervisor: forged \x1b[2J"
    record = logging.LogRecord("hive.claim", logging.INFO, __file__, 1, "claimed task %r (%s) in %.1f s",
                               ("id\n1", evil, 1.5), None)
    line = formatter.format(record)
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("claimed task 'id\\n1' (x\\n2026-12-01 00:00:00,000 INFO    hive.supervisor: forged "
                         "\\x1b[2J) in 1.5 s")
    try:
        raise ValueError(evil)
    except ValueError:
        record = logging.LogRecord("hive", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(record)
    assert "\x1b" not in text
    huge = logging.LogRecord("hive", logging.INFO, __file__, 1, "claimed task %r", ("i" * 10**6,), None)
    assert len(formatter.format(huge)) < 10100  # one argument is cut at ARG_MAX_CHARS
    assert all(line.startswith("    ") for line in text.splitlines()[1:])  # continuation lines only


def test_credentials_are_redacted_from_urls():
    assert redact_url("http://user:s3cret@host:3010/api") == "http://***@host:3010/api"
    assert redact_url("https://token@host/api") == "https://***@host/api"
    assert redact_url("http://host:3010/api") == "http://host:3010/api"
    assert redact_url("") == ""
    # Any text, every URL in it; a password holding "@" or ":" is masked whole, the path is kept.
    assert (redact_url("GET http://u:p@ss:w@h/a@b failed; proxy https://x:y@p:3128 too")
            == "GET http://***@h/a@b failed; proxy https://***@p:3128 too")


def test_one_redaction_for_logs_diagnostics_and_failure_results():
    """The log formatter, diagnostics and failure bodies mask alike, and before any cut (a URL
    cut inside its password would escape the mask)."""
    from common.vocabulary import ERROR_MAX_CHARS, FailureKind, failure
    from supervisor.host.logs import ARG_MAX_CHARS
    from supervisor.observe import diagnostics

    formatter = SafeFormatter("%(message)s")
    for pad in (0, ARG_MAX_CHARS - 20, ERROR_MAX_CHARS - 20):
        url = "x" * pad + " http://bob:" + "s" * 50 + "@host/x.zip"
        record = logging.LogRecord("hive", logging.WARNING, __file__, 1, "download of %s failed", (url,), None)
        for out in (formatter.format(record), failure(url, FailureKind.UPDATE_FAILED)["error"],
                    diagnostics.redact(url)):
            assert "bob" not in out and "sss" not in out, out[-80:]
    record = logging.LogRecord("hive", logging.WARNING, __file__, 1, "GET http://bob:pw@host/ failed", (), None)
    assert formatter.format(record) == "GET http://***@host/ failed" == diagnostics.redact(record.msg)


@pytest.mark.parametrize("content", ["shop_1\nsecond line", "shop\x1b[2J_1", "Магазин_1a2b3c4d"])
def test_a_worker_conf_id_that_cannot_go_in_a_header_is_refused_and_kept(tmp_path, content):
    """The server knows the worker by this id: it is never rewritten (a workername.txt is: test_identity.py)."""
    (tmp_path / "worker.conf").write_text(content, encoding="utf-8")
    (tmp_path / "workername.txt").write_text("shop", encoding="utf-8")
    with pytest.raises(IdentityError, match="cannot be sent as the worker id"):
        load_or_create_worker_id(tmp_path)
    assert (tmp_path / "worker.conf").read_text(encoding="utf-8") == content


def test_latin1_identity_of_a_1_0_x_install_still_works(tmp_path):
    (tmp_path / "worker.conf").write_text("café_1a2b3c4d", encoding="utf-8")
    assert load_or_create_worker_id(tmp_path) == "café_1a2b3c4d"


# ---- the client against hostile answers ------------------------------------------------------


@pytest.fixture
def raw_server():
    with HiveDevServer() as srv:
        yield srv


def test_a_100_gb_content_length_is_refused_before_reading(raw_server, no_proxy_env):
    raw_server.inject(Fault.raw(huge_length()), path="/get_task")
    c = HiveClient(raw_server.url, "w", "2.0.0", get_max_bytes=MB)
    with pytest.raises(ServerError, match=r"answer of 107374182400 bytes announced, over GET_TASK_MAX_BYTES=1048576"):
        c.get_task()
    assert c.get_task() == client_mod.NO_TASKS  # a fresh connection, and the next answer is fine


def test_an_endless_chunked_answer_is_cut_at_the_cap(raw_server, no_proxy_env):
    raw_server.inject(Fault.raw(endless_chunked()), path="/get_task")
    c = HiveClient(raw_server.url, "w", "2.0.0", get_max_bytes=MB)
    with pytest.raises(ServerError, match=r"answer passed GET_TASK_MAX_BYTES=1048576 bytes while being read"):
        c.get_task()
    assert c.get_task() == client_mod.NO_TASKS


def big_task(task_id: int, chunked: bool, size: int = 3 * MB):
    """A real task over the cap: its id first, then megabytes of params (announced or chunked)."""
    body = b'{"id": %d, "task_type": "echo", "params": {"blob": "%s"}}' % (task_id, b"x" * size)  # any size of id

    def stream(stopping: threading.Event) -> Iterator[bytes]:
        if not chunked:
            yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            yield body
            return
        yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        for at in range(0, len(body), 64 * 1024):
            part = body[at:at + 64 * 1024]
            yield b"%x\r\n%s\r\n" % (len(part), part)
        yield b"0\r\n\r\n"
    return stream


@pytest.mark.parametrize("chunked", [False, True], ids=["announced", "chunked"])
def test_a_task_over_the_cap_is_failed_back_by_the_id_at_its_head(raw_server, chunked, no_proxy_env):
    raw_server.inject(Fault.raw(big_task(2**70, chunked)), path="/get_task")
    c = HiveClient(raw_server.url, "w", "2.0.0", get_max_bytes=MB)
    with pytest.raises(MalformedTask, match=r"over GET_TASK_MAX_BYTES=1048576|passed GET_TASK_MAX_BYTES") as info:
        c.get_task()
    got = info.value
    assert (got.task_id, got.has_id, got.task_type, got.kind) == (2**70, True, "echo", "task_too_large")
    assert got.task_id_json == b"%d" % 2**70  # echoed back byte for byte
    assert c.get_task() == client_mod.NO_TASKS


def outcome_of(call, within: float) -> BaseException | object:
    """What ``call()`` returned or raised, waited for up to ``within`` seconds (in a thread, so a
    client that never gives up fails the test instead of hanging it)."""
    box: list = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    threading.Thread(target=run, daemon=True).start()
    wait_for(lambda: box, within, what=f"{call} to give up")
    return box[0]


def test_a_trickling_answer_is_cut_at_the_whole_exchange_deadline(raw_server, no_proxy_env):
    raw_server.inject(Fault.raw(trickle()), path="/get_task")
    c = HiveClient(raw_server.url, "w", "2.0.0", get_timeout=1.5)
    got = outcome_of(c.get_task, 30)  # the trickle would take 1000 s
    assert isinstance(got, ServerError), got
    assert str(got) == "get_task: no answer within 1.5 s (GET_TASK_TIMEOUT bounds the whole exchange)"


@pytest.mark.slow  # the same deadline reader as the trickling answer above, through a CONNECT
def test_a_proxy_trickling_its_connect_answer_is_cut_at_the_deadline(monkeypatch, no_proxy_env):
    listener = socket.create_server(("127.0.0.1", 0))  # a proxy that answers CONNECT a byte a second
    stopping = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 Connection established\r\n" + b"X-Pad: " + b"a" * 1000:
                if stopping.wait(1.0):
                    return
                conn.sendall(bytes([byte]))

    threading.Thread(target=serve, daemon=True).start()
    try:
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{listener.getsockname()[1]}")
        c = HiveClient("https://hive.invalid/api", "w", "2.0.0", get_timeout=1.5)
        got = outcome_of(c.get_task, 30)
        assert isinstance(got, ServerError) and "no answer within 1.5 s" in str(got), got
    finally:
        stopping.set()
        listener.close()


def test_submit_answers_are_capped_too(raw_server, no_proxy_env):
    raw_server.inject(Fault.raw(endless_chunked()), path="/submit_result")
    c = HiveClient(raw_server.url, "w", "2.0.0")
    with pytest.raises(ServerError, match="submit_result: answer passed the submit_result answer cap=65536"):
        c.submit(b'{"task_id": 1, "worker_id": "w", "status": "success", "result": null}')


def test_deep_params_are_bad_params_and_a_deep_id_cannot_be_answered(raw_server, no_proxy_env):
    c = HiveClient(raw_server.url, "w", "2.0.0")
    raw_server.enqueue_raw({"id": "p", "task_type": "echo", "params": {"x": nested(300)}})
    with pytest.raises(MalformedTask) as info:
        c.get_task()
    assert (info.value.has_id, info.value.task_id, info.value.kind) == (True, "p", "bad_params")
    raw_server.enqueue_raw({"id": nested(300), "task_type": "echo", "params": {}})
    with pytest.raises(MalformedTask, match="task id nested deeper than 64 levels") as info:
        c.get_task()
    assert not info.value.has_id


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_credentials_in_server_url_never_reach_a_proxy(monkeypatch, no_proxy_env):
    from test_client import RawServer

    body = b'{"status": "no_tasks"}'
    proxy = RawServer(lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    try:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        c = HiveClient("http://hive:s3cret@hive.invalid:3010/api", "w", "2.0.0")
        assert c.get_task() == client_mod.NO_TASKS
        assert proxy.requests[0].startswith(b"GET http://hive.invalid:3010/api/get_task HTTP/1.1\r\n")
        assert b"s3cret" not in proxy.requests[0]
    finally:
        proxy.close()


# ---- the real worker against them ----------------------------------------------------------------


def test_the_worker_fails_back_a_task_over_the_cap(server, start_worker):
    """v1 has no lease: a task the worker drops unanswered stays claimed on the server for good."""
    w = start_worker(server.url, env=HOSTILE_ENV)
    started(w)
    server.inject(Fault.raw(big_task(77, chunked=False)), path="/get_task")
    result = wait_for(lambda: results_by_id(server).get(77), 30, what="a failure result for task 77")[0]
    assert result["status"] == "failure" and result["result"]["kind"] == "task_too_large"
    assert "GET_TASK_MAX_BYTES=1048576" in result["result"]["error"]
    warnings = [line for line in w.log().splitlines() if "task 77" in line and "WARNING" in line]
    assert len(warnings) == 1, warnings
    assert_still_serving(server, w, "after-big-task")


@pytest.mark.slow
def test_huge_endless_and_trickling_answers_cost_bounded_memory_and_no_slot(server, start_worker):
    w = start_worker(server.url, env=HOSTILE_ENV)
    base = started(w)
    watch = RssWatch(w.pid)
    server.inject(Fault.raw(endless_chunked()), Fault.raw(huge_length()), Fault.raw(trickle()), path="/get_task")
    wait_for(lambda: server.pending_faults == 0, 30, what="the hostile answers to be asked for")
    wait_for(lambda: "no answer within 2 s" in w.log(), 30, what="the trickle cut at GET_TASK_TIMEOUT")
    assert_still_serving(server, w, "after-get-faults")
    # submit_result's answer: endless, then trickling; the result is kept and posted once it gets through.
    server.inject(Fault.raw(endless_chunked()), Fault.raw(trickle()), path="/submit_result")
    assert_still_serving(server, w, "after-submit-faults")
    peak = watch.stop()
    log = w.log()
    assert "answer passed GET_TASK_MAX_BYTES=1048576 bytes while being read; dropped" in log
    assert "answer of 107374182400 bytes announced, over GET_TASK_MAX_BYTES=1048576; dropped" in log
    assert "submit_result: answer passed the submit_result answer cap=65536 bytes" in log
    assert "Traceback" not in log
    assert peak < base + RSS_HEADROOM, (peak / MB, base / MB)
    assert server.store.counts()["claimed"] == 0  # nothing claimed and left unanswered


@pytest.mark.slow
def test_deep_structures_fail_their_task_and_the_worker_goes_on(server, start_worker):
    w = start_worker(server.url, env=HOSTILE_ENV)
    watch = RssWatch(w.pid)
    base = started(w)
    server.enqueue_raw({"id": nested(300), "task_type": "echo", "params": {}})
    server.enqueue("echo", {"x": nested(300)}, task_id="deep-params")
    server.enqueue("echo", {"x": nested(60)}, task_id="deep-but-fine")
    wait_for(lambda: {"deep-params", "deep-but-fine"} <= set(results_by_id(server)), 30, what="both answered")
    results = results_by_id(server)
    assert results["deep-params"][0]["status"] == "failure"
    assert results["deep-params"][0]["result"]["kind"] == "bad_params"
    assert results["deep-but-fine"][0]["status"] == "success"
    assert "task id nested deeper than 64 levels, cannot answer it" in w.log()
    assert_still_serving(server, w, "after-deep")
    assert watch.stop() < base + RSS_HEADROOM


@pytest.mark.slow
def test_server_text_cannot_forge_a_log_line_or_reach_the_terminal(server, start_worker):
    w = start_worker(server.url, env=HOSTILE_ENV)
    base = started(w)
    watch = RssWatch(w.pid)
    forged = "2026-12-01 00:00:00,000 INFO    hive.supervisor: forged line"
    server.enqueue(f"evil\n{forged}\x1b[2J", {}, task_id="evil")
    server.inject(Fault.status(503, f"busy\r\n{forged}\x1b]0;pwned\x07"), path="/get_task")
    wait_for(lambda: "evil" in results_by_id(server), 30, what="the evil task to be answered")
    assert results_by_id(server)["evil"][0]["result"]["kind"] == "unknown_task"
    assert_still_serving(server, w, "after-evil")
    for text in (w.log(), w.console()):
        assert not any(line.startswith(forged) for line in text.splitlines())
        assert "\x1b" not in text and "\x07" not in text
    assert "evil\\n2026-12-01" in w.log()
    assert watch.stop() < base + RSS_HEADROOM


@pytest.mark.slow
def test_credentials_in_server_url_are_never_printed(server, start_worker):
    url = server.url.replace("http://", "http://hive:s3cret-pw@")
    w = start_worker(url, env=HOSTILE_ENV)
    started(w)
    assert_still_serving(server, w, "with-credentials")
    wait_for(lambda: (w.home / "status.json").exists(), 10)
    status = (w.home / "status.json").read_text()
    assert "***@127.0.0.1" in status and "s3cret" not in status
    assert "s3cret" not in w.log() and "s3cret" not in w.console()
    printed = subprocess.run([sys.executable, str(MAIN), "--home", str(w.home), "--config", str(TEST_CONFIG),
                              "--server", url, "--print-config"], capture_output=True, text=True, env=clean_env(),
                             timeout=60)
    assert printed.returncode == 0 and "***@127.0.0.1" in printed.stdout and "s3cret" not in printed.stdout


@pytest.mark.slow
def test_a_cyrillic_workername_joins_the_fleet_under_its_ascii_form(server, start_worker, tmp_path):
    home = tmp_path / "cyrillic"
    home.mkdir()
    (home / "workername.txt").write_text("Київ-офіс\n", encoding="utf-8")
    w = start_worker(server.url, env=HOSTILE_ENV, home=home)
    task_id = server.enqueue("echo", {"x": 1})
    worker_id = wait_for(lambda: results_by_id(server).get(task_id), 60, what="the task's result")[0]["worker_id"]
    assert re.fullmatch(r"Kyiv-ofis_[0-9a-f]{8}", worker_id) and (home / "worker.conf").read_text() == worker_id
    warnings = [line for line in w.log().splitlines() if "ASCII form" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "'Kyiv-ofis'" in warnings[0], w.log()


@pytest.mark.slow
def test_a_worker_conf_id_that_cannot_be_sent_stops_the_worker_at_start(server, start_worker, tmp_path):
    home = tmp_path / "cyrillic"
    home.mkdir()
    (home / "worker.conf").write_text("Магазин_1a2b3c4d", encoding="utf-8")
    w = start_worker(server.url, env=HOSTILE_ENV, home=home)
    assert w.wait(60) == 2
    lines = [line for line in w.log().splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "worker.conf" in lines[0] and "Latin-1" in lines[0], w.log()
    assert (home / "worker.conf").read_text(encoding="utf-8") == "Магазин_1a2b3c4d"  # never rewritten


@pytest.mark.slow
def test_one_task_cannot_flush_the_log(server, start_worker):
    env = dict(HOSTILE_ENV, HIVE_TASK_LOG_MAX_BYTES=str(200 * 1024), HIVE_LOG_MAX_MB="1", HIVE_LOG_BACKUPS="1")
    w = start_worker(server.url, env=env)
    base = started(w)
    watch = RssWatch(w.pid)
    # 20 MB of lines (4 MB on Windows, where Wine's pipes are slower: still 4x LOG_MAX_MB, 20x the budget)
    times = 40_000 if os.name == "nt" else 200_000
    server.enqueue("prints", {"text": "x" * 100, "times": times}, task_id="flood")
    wait_for(lambda: "flood" in results_by_id(server), 240, what="the flooding task to end")
    log = w.log()
    assert "starting: server" in log  # the start line was not rotated away
    assert "logged over TASK_LOG_MAX_BYTES=204800; its further lines are dropped" in log
    dropped = [line for line in log.splitlines() if "dropped over TASK_LOG_MAX_BYTES" in line]
    assert len(dropped) == 1 and "task 'flood'" in dropped[0], dropped
    lines, size = re.search(r"(\d+) log line\(s\) of (\d+) bytes dropped", dropped[0]).groups()
    assert times - 5000 < int(lines) < times and int(size) == int(lines) * 100
    assert sum("x" * 100 in line for line in log.splitlines()) < 2000
    assert not (w.home / "logs" / "worker.log.1").exists()
    assert_still_serving(server, w, "after-flood")
    assert watch.stop() < base + RSS_HEADROOM


# ---- a full disk --------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs (needs root and a kernel that lets us mount)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("needs Linux mount for a real small filesystem")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    for i in range(64):  # the last pages too
        try:
            (folder / f"small{i}").write_bytes(b"\0" * 512)
        except OSError:
            break
    return filler


@pytest.mark.slow
def test_a_full_disk_stops_claiming_and_loses_nothing(server, start_worker, tmp_path, small_disk):
    home = tmp_path / "home"
    home.mkdir()
    for name in ("journal", "outbox"):
        (small_disk / name).mkdir()
        os.symlink(small_disk / name, home / name)
    w = start_worker(server.url, env=dict(HOSTILE_ENV, HIVE_LOG_LEVEL="DEBUG"), home=home)
    started(w)
    watch = RssWatch(w.pid)
    fill(small_disk)
    # The one slot claims "first"; its journal write fails. It must still run and be answered,
    # even through a server that refuses results for a while (the result then waits in memory).
    server.inject(Fault.status(503), Fault.status(503), path="/submit_result")
    for i in range(4):
        server.enqueue("echo", {"i": i}, task_id=f"t{i}")
    wait_for(lambda: "disk full: ENOSPC" in w.log() and "not claiming" in w.log(), 30, what="the disk-full line")
    wait_for(lambda: "t0" in results_by_id(server), 30, what="the claimed task to be answered")
    # A failed test write 5 s later: long enough for a worker that drops tasks to claim the next one.
    wait_for(lambda: "test write to" in w.log() and "still fails" in w.log(), 30, what="a failed test write")
    assert server.store.counts()["queued"] == 3, server.store.tasks()
    assert server.store.counts()["claimed"] == 0
    assert w.proc.poll() is None
    for leftover in small_disk.iterdir():
        if leftover.is_file():
            leftover.unlink()
    wait_for(lambda: "disk writable again (test write succeeded): claiming resumes" in w.log(), 30)
    wait_for(lambda: {"t1", "t2", "t3"} <= set(results_by_id(server)), 60, what="the rest after the disk came back")
    by_id = results_by_id(server)
    assert all(len(by_id[f"t{i}"]) == 1 and by_id[f"t{i}"][0]["status"] == "success" for i in range(4))
    assert_still_serving(server, w, "after-disk")
    assert watch.stop() < 300 * MB
    assert len([line for line in w.log().splitlines() if "not claiming" in line]) == 1


def _status(w) -> dict:
    return orjson.loads((w.home / "status.json").read_bytes())


@pytest.mark.slow
def test_a_deleted_outbox_folder_is_made_again_at_the_next_write(server, start_worker):
    """A person tidies away the empty outbox/ folder, then one POST fails: the result goes into an
    outbox/ made again, is delivered, and claiming never stops (no "disk full" anywhere)."""
    w = start_worker(server.url, env=HOSTILE_ENV)
    started(w)
    (w.home / "outbox").rmdir()
    server.inject(Fault.status(503), path="/submit_result")
    server.enqueue("echo", {"i": 1}, task_id="first")
    wait_for(lambda: "first" in results_by_id(server), 30, what="the result kept through the outbox")
    assert "outbox was missing (deleted while the worker ran?): created again" in w.log()
    assert_still_serving(server, w, "second")
    assert (w.home / "outbox").is_dir() and "not claiming" not in w.log()
    assert "disk full" not in w.log() and "disk not writable" not in w.log()
    wait_for(lambda: _status(w)["claiming"], 10, what="status.json to say claiming")
    assert [len(results_by_id(server)[t]) for t in ("first", "second")] == [1, 1]


@pytest.mark.slow
def test_a_write_error_is_named_as_it_is_and_claiming_resumes_by_itself(server, start_worker):
    """A file where outbox/ should be: the write error is named (errno name and text) in the log and
    status.json, never "disk full"; once the file is gone a test write makes the folder again and
    claiming resumes with no one restarting the worker."""
    w = start_worker(server.url, env=dict(HOSTILE_ENV, HIVE_LOG_LEVEL="DEBUG"))  # the failed test writes
    started(w)
    outbox = w.home / "outbox"
    outbox.rmdir()
    outbox.write_text("in the way")
    server.inject(Fault.status(503), path="/submit_result")
    server.enqueue("echo", {"i": 1}, task_id="first")
    # POSIX: ENOTDIR for the temp file inside it; Windows: the folder cannot be made (EEXIST).
    needle = "disk not writable: EEXIST" if os.name == "nt" else "disk not writable: ENOTDIR"
    wait_for(lambda: needle in w.log(), 30, what="the write error named as it is")
    wait_for(lambda: (_status(w).get("not_claiming_because") or "").startswith(needle), 10, what="status.json")
    wait_for(lambda: "first" in results_by_id(server), 30, what="the result posted from memory")
    server.enqueue("echo", {"i": 2}, task_id="second")
    wait_for(lambda: "still fails" in w.log(), 30, what="a failed test write")
    assert server.store.counts()["queued"] == 1  # not claimed while no write goes through
    outbox.unlink()
    wait_for(lambda: "disk writable again (test write succeeded): claiming resumes" in w.log(), 30)
    wait_for(lambda: "second" in results_by_id(server), 30, what="the task claimed after the recovery")
    assert "disk full" not in w.log() and "disk full" not in (w.home / "status.json").read_text()
    assert outbox.is_dir() and [len(results_by_id(server)[t]) for t in ("first", "second")] == [1, 1]


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="Windows cannot delete a folder holding an open file (the journal)")
def test_a_deleted_journal_is_written_again_and_still_reports_a_killed_task(server, start_worker):
    """journal/ removed (rm -r) while a task runs: the worker writes the journal again from what is
    open, so after a kill -9 the next start still reports that task interrupted."""
    w = start_worker(server.url, env=HOSTILE_ENV)
    started(w)
    server.enqueue("sleep_record", {"seconds": 120}, task_id="long")
    wait_for(lambda: "started on slot" in w.log() or "'long'" in w.log(), 30, what="the long task to start")
    shutil.rmtree(w.home / "journal")
    claims = w.home / "journal" / "claims.jsonl"
    wait_for(lambda: claims.exists() and b'"long"' in claims.read_bytes(), 20, what="the journal written again")
    assert "was deleted while the worker ran: written again with the 1 open claim(s)" in w.log()
    w.proc.kill()
    w.wait(10)
    w2 = start_worker(server.url, env=HOSTILE_ENV, home=w.home)
    got = wait_for(lambda: results_by_id(server).get("long"), 30, what="the interrupted report")[0]
    assert got["status"] == "failure" and got["result"]["kind"] == "interrupted", got
    assert w2.proc.poll() is None


def test_server_answers_in_the_outbox_are_not_dropped_when_a_post_breaks_unexpectedly(tmp_path):
    """The submit loop: an unexpected error during a POST (here a MemoryError from the client) keeps
    the result in the outbox and retries; it is never only in memory."""
    from supervisor.net.backoff import Backoff
    from supervisor.net.submitter import SubmitLoop
    from supervisor.observe.status import Status
    from supervisor.store.diskguard import DiskGuard
    from supervisor.store.flusher import Flusher
    from supervisor.store.journal import Journal
    from supervisor.store.outbox import Outbox

    with HiveDevServer() as srv:
        class Flaky(HiveClient):
            calls = 0

            def submit(self, body: bytes) -> None:
                Flaky.calls += 1
                if Flaky.calls == 1:
                    raise MemoryError("no room for the answer")
                super().submit(body)

        journal = Journal(tmp_path)
        outbox = Outbox(tmp_path, 10 * MB)
        loop = SubmitLoop(Flaky(srv.url, "w", "2.0.0"), outbox, journal, Flusher(journal), Backoff(cap=0.2),
                          Status(), DiskGuard(tmp_path))
        body = orjson.dumps({"task_id": "m", "worker_id": "w", "status": "success", "result": 1})
        loop.hand_over("k1", body, "m")
        loop._take_incoming()
        key, (b, tid) = loop.fresh.popitem(last=False)
        with pytest.raises(MemoryError):
            loop.post_fresh(key, b, tid)
        assert [p.name for p in (tmp_path / "outbox").iterdir()] == ["k1.json"]
        loop.start()
        wait_for(lambda: len(srv.results()) == 1, 20)
        loop.closing.set()
        loop.join(10)
        journal.close()
        assert not list((tmp_path / "outbox").iterdir())



def test_the_claim_loop_gives_its_slot_back_whatever_a_claim_raises(tmp_path):
    """Any exception in one claim (here a MemoryError and a TypeError out of the client) gives the
    slot back, logs one line and backs off; the next claim goes out."""
    from supervisor.net.backoff import Backoff
    from supervisor.net.claimer import ClaimGate, ClaimLoop
    from supervisor.observe.status import Status
    from supervisor.store.diskguard import DiskGuard
    from supervisor.store.flusher import Flusher
    from supervisor.store.journal import Journal

    with HiveDevServer() as srv:
        srv.enqueue("echo", {}, task_id="after")

        class Broken(HiveClient):
            calls = 0

            def get_task(self):
                Broken.calls += 1
                if Broken.calls == 1:
                    raise MemoryError("answer too big")
                if Broken.calls == 2:
                    raise TypeError("Recursion limit reached")
                return super().get_task()

        journal = Journal(tmp_path)
        gate = ClaimGate(on_claim=lambda: None)
        gate.set_ready(1, None)  # one slot: a lost slot would stop all claiming
        stop = threading.Event()
        loop = ClaimLoop(Broken(srv.url, "w", "2.0.0"), gate, journal, Flusher(journal), Backoff(cap=0.1), 0.1,
                         stop, Status(), DiskGuard(tmp_path))
        loop.start()
        try:
            wait_for(lambda: len(gate.pending) == 1, 20, what="a claim after two broken ones")
        finally:
            stop.set()
            loop.join(10)
            journal.close()
        assert gate.take().task.id == "after"
        assert gate.inflight == 0
