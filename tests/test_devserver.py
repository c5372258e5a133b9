"""The local Hive dev server: protocol v1 over real HTTP, its queue, its faults and its CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conftest import WINDOWS, console_ctrl_c  # noqa: E402

from devserver import Fault, HiveDevServer, Store  # noqa: E402

HEADERS = {"X-Worker-ID": "worker_0badc0de", "X-Worker-Version": "2.0.0"}


@pytest.fixture
def srv():
    with HiveDevServer(requeue_after=0.2) as s:
        yield s


@pytest.fixture
def http():
    with requests.Session() as s:
        s.headers.update(HEADERS)
        yield s


def get_task(http: requests.Session, srv: HiveDevServer, timeout: float = 5.0) -> requests.Response:
    return http.get(f"{srv.url}/get_task", timeout=timeout)


def submit(http: requests.Session, srv: HiveDevServer, task_id, result=None, status: str = "success",
           timeout: float = 5.0) -> requests.Response:
    body = {"task_id": task_id, "worker_id": HEADERS["X-Worker-ID"], "status": status, "result": result}
    return http.post(f"{srv.url}/submit_result", json=body, timeout=timeout)


def run_cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devserver", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


# -- protocol -------------------------------------------------------------------


def test_round_trip_echoes_id_types(srv, http):
    srv.enqueue("echo", {"a": 1}, task_id=7)
    srv.enqueue("echo", {"b": 2}, task_id="7")
    srv.enqueue("get_system_info", task_id="abc-1")
    got = [get_task(http, srv).json() for _ in range(3)]
    assert got == [
        {"id": 7, "task_type": "echo", "params": {"a": 1}},
        {"id": "7", "task_type": "echo", "params": {"b": 2}},
        {"id": "abc-1", "task_type": "get_system_info", "params": {}},
    ]
    for task in got:
        resp = submit(http, srv, task["id"], task["params"])
        assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    results = srv.results()
    assert [r["task_id"] for r in results] == [7, "7", "abc-1"]
    assert [type(r["task_id"]) for r in results] == [int, str, str]
    assert results[0]["worker_id"] == HEADERS["X-Worker-ID"] and results[0]["result"] == {"a": 1}
    assert srv.store.counts()["done"] == 3
    assert all(t["claimed_by"] == HEADERS["X-Worker-ID"] for t in srv.store.tasks())


def test_no_tasks_and_default_ids(srv, http):
    resp = get_task(http, srv)
    assert resp.status_code == 200 and resp.json() == {"status": "no_tasks"}
    assert resp.headers["Content-Type"] == "application/json"
    assert [srv.enqueue("t") for _ in range(2)] == [1, 2]
    srv.enqueue("t", task_id=10)
    srv.enqueue("t", task_id="99")  # a string id does not move the integer sequence
    assert srv.enqueue("t") == 11


def test_params_may_be_any_json(srv, http):
    srv.enqueue("echo", [1, 2], task_id="list")
    assert get_task(http, srv).json()["params"] == [1, 2]


def test_raw_answers_go_out_verbatim_and_first(srv, http):
    srv.enqueue("echo", {}, task_id=1)
    srv.enqueue_raw({"id": 5, "params": {"x": 1}})  # no task_type
    srv.enqueue_raw([1, 2, 3])
    srv.enqueue_raw({"id": 6, "task_type": "echo"})  # no params
    assert get_task(http, srv).json() == {"id": 5, "params": {"x": 1}}
    assert get_task(http, srv).json() == [1, 2, 3]
    assert get_task(http, srv).json() == {"id": 6, "task_type": "echo"}
    assert get_task(http, srv).json()["id"] == 1
    assert srv.store.counts()["raw"] == 0


def test_requeue_after_timeout_without_result(srv, http):
    srv.enqueue("slow", task_id="lost")
    srv.enqueue("fast", task_id="answered")
    assert get_task(http, srv).json()["id"] == "lost"
    assert get_task(http, srv).json()["id"] == "answered"
    submit(http, srv, "answered", 1)
    assert get_task(http, srv).json() == {"status": "no_tasks"}
    time.sleep(0.3)
    assert get_task(http, srv).json()["id"] == "lost"
    assert get_task(http, srv).json() == {"status": "no_tasks"}
    claims = {t["task_id"]: t["claims"] for t in srv.store.tasks()}
    assert claims == {"lost": 2, "answered": 1}


def test_duplicate_results_are_all_kept(srv, http):
    srv.enqueue("echo", task_id=3)
    get_task(http, srv)
    for _ in range(2):
        assert submit(http, srv, 3, {"n": 1}).status_code == 200
    submit(http, srv, "never-enqueued", None, status="failure")
    assert [r["task_id"] for r in srv.results()] == [3, 3, "never-enqueued"]
    assert srv.store.counts() == {"queued": 0, "claimed": 0, "done": 1, "results": 3, "raw": 0}


def test_bad_requests(srv, http):
    bad = http.post(f"{srv.url}/submit_result", data=b"{not json", timeout=5)
    assert bad.status_code == 400
    assert http.post(f"{srv.url}/submit_result", json=[1], timeout=5).status_code == 400
    assert http.get(f"{srv.url}/nope", timeout=5).status_code == 404
    assert http.get(srv.url.removesuffix("/api") + "/get_task", timeout=5).status_code == 404
    wrong = http.post(f"{srv.url}/get_task", timeout=5)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET"
    assert srv.results() == []
    assert get_task(http, srv).status_code == 200  # the connection still serves


def test_requests_are_recorded_with_headers(srv, http):
    get_task(http, srv)
    submit(http, srv, 1, "x")
    reqs = list(srv.requests)
    assert [(r.method, r.path) for r in reqs] == [("GET", "/api/get_task"), ("POST", "/api/submit_result")]
    for r in reqs:
        assert r.headers.get("X-Worker-ID") == HEADERS["X-Worker-ID"]
        assert r.headers["x-worker-version"] == "2.0.0"  # lookups ignore case
    assert json.loads(reqs[1].body)["result"] == "x"
    assert reqs[0].time <= reqs[1].time <= time.monotonic()
    assert srv.requests.count("/get_task") == 1


def test_keep_alive_reuses_one_connection(srv, http):
    for _ in range(20):
        resp = get_task(http, srv)
        assert resp.headers["Content-Length"] == str(len(resp.content))
        assert resp.headers.get("Connection", "").lower() != "close"
    assert len({r.client for r in srv.requests}) == 1


def test_prefix_is_configurable(http):
    with HiveDevServer(prefix="hive/v1/") as s:
        assert s.url.endswith("/hive/v1")
        assert http.get(f"{s.url}/get_task", timeout=5).json() == {"status": "no_tasks"}


def test_stop_closes_kept_alive_connections_and_keeps_results(tmp_path, http):
    s = HiveDevServer(str(tmp_path / "db.sqlite")).start()
    submit(http, s, 1, "kept")
    s.stop()
    with pytest.raises(requests.ConnectionError):
        get_task(http, s, timeout=2)
    assert [r["result"] for r in s.results()] == ["kept"]


# -- faults ----------------------------------------------------------------------


def test_status_faults_are_one_shot(srv, http):
    srv.enqueue("echo", task_id=1)
    srv.inject(Fault.status(500), Fault.status(502, b"<html><body>Bad Gateway</body></html>"),
               Fault.status(503, headers={"Retry-After": "7"}), Fault.status(429, "slow down"))
    first = get_task(http, srv)
    assert first.status_code == 500
    second = get_task(http, srv)
    assert second.status_code == 502 and second.headers["Content-Type"] == "text/html" and b"Bad Gateway" in second.content
    third = get_task(http, srv)
    assert third.status_code == 503 and third.headers["Retry-After"] == "7"
    fourth = get_task(http, srv)
    assert fourth.status_code == 429 and fourth.text == "slow down"
    assert srv.store.counts()["queued"] == 1  # a faulted get_task claims nothing
    assert get_task(http, srv).json()["id"] == 1
    assert srv.pending_faults == 0 and srv.requests.count("/get_task") == 5


def test_path_filter(srv, http):
    srv.inject(Fault.status(500), Fault.reset(), path="/submit_result")
    assert get_task(http, srv).json() == {"status": "no_tasks"}
    assert submit(http, srv, 1).status_code == 500
    with pytest.raises(requests.ConnectionError):
        submit(http, srv, 1)
    assert submit(http, srv, 1).status_code == 200
    assert len(srv.results()) == 1


def test_reset_gives_a_connection_error(srv, http):
    srv.inject(Fault.reset())
    with pytest.raises(requests.ConnectionError) as info:
        get_task(http, srv)
    assert "reset" in str(info.value).lower() or "aborted" in str(info.value).lower()
    assert get_task(http, srv).json() == {"status": "no_tasks"}


def test_hang_times_the_client_out(srv, http):
    srv.inject(Fault.hang(5))
    start = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        get_task(http, srv, timeout=0.3)
    assert time.monotonic() - start < 3
    assert get_task(http, srv).json() == {"status": "no_tasks"}


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"", b"[1, 2]"])
def test_garbage_is_a_200_without_a_json_object(srv, http, body):
    srv.inject(Fault.garbage(body))
    resp = get_task(http, srv)
    assert resp.status_code == 200 and resp.content == body


def test_lose_answer_on_submit_records_the_result(srv, http):
    srv.enqueue("echo", task_id="t")
    get_task(http, srv)
    srv.inject(Fault.lose_answer(), path="submit_result")
    with pytest.raises(requests.ConnectionError):
        submit(http, srv, "t", {"ok": True})
    assert [r["task_id"] for r in srv.results()] == ["t"]
    assert srv.store.counts()["done"] == 1


def test_lose_answer_on_get_task_claims_the_task(srv, http):
    srv.enqueue("echo", task_id="gone")
    srv.inject(Fault.lose_answer())
    with pytest.raises(requests.ConnectionError):
        get_task(http, srv)
    assert srv.store.counts()["claimed"] == 1
    time.sleep(0.3)  # requeue_after=0.2 brings it back
    assert get_task(http, srv).json()["id"] == "gone"


def test_fault_hook_is_consulted_per_request(srv, http):
    srv.faults = lambda method, path: Fault.status(503) if method == "POST" else None
    assert get_task(http, srv).status_code == 200
    assert submit(http, srv, 1).status_code == 503
    assert submit(http, srv, 1).status_code == 503
    srv.faults = None
    assert submit(http, srv, 1).status_code == 200


# -- store across threads and processes --------------------------------------------


def test_concurrent_claims_never_share_a_task(tmp_path):
    db = str(tmp_path / "q.sqlite")
    stores = [Store(db), Store(db)]  # two connections, as two processes would have
    ids = [stores[0].enqueue("t") for _ in range(60)]
    got: list = []
    lock = threading.Lock()

    def claimer(store: Store, name: str) -> None:
        while (task := store.claim(name)) is not None:
            with lock:
                got.append(task["id"])

    threads = [threading.Thread(target=claimer, args=(stores[i % 2], f"w{i}")) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert sorted(got) == ids
    for s in stores:
        s.close()


# -- CLI -------------------------------------------------------------------------


def test_cli_against_a_served_db(tmp_path, http):
    db = str(tmp_path / "dev.sqlite")
    params_file = tmp_path / "p.json"
    params_file.write_text('{"text": "from a file"}', encoding="utf-8")
    with HiveDevServer(db) as s:
        out = run_cli("enqueue", "example", "--params", '{"text": "hello"}', "--id", "7", "--db", db)
        assert out.returncode == 0, out.stderr
        out = run_cli("enqueue", "example", "--params", f"@{params_file}", "--id", "abc", "--db", db)
        assert out.returncode == 0, out.stderr
        out = run_cli("enqueue", "get_system_info", "--count", "2", "--db", db)
        assert out.returncode == 0 and out.stdout.count("enqueued") == 2, out.stderr
        tasks = [get_task(http, s).json() for _ in range(4)]
        assert tasks[:2] == [{"id": 7, "task_type": "example", "params": {"text": "hello"}},
                             {"id": "abc", "task_type": "example", "params": {"text": "from a file"}}]
        assert [t["id"] for t in tasks[2:]] == [8, 9]
        submit(http, s, 7, {"echo": ["hello"]})
        submit(http, s, "abc", {"error": "nope"}, status="failure")

        out = run_cli("results", "--db", db, "--json")
        assert out.returncode == 0, out.stderr
        results = json.loads(out.stdout)
        assert [(r["task_id"], r["status"]) for r in results] == [(7, "success"), ("abc", "failure")]
        out = run_cli("results", "--db", db)
        lines = out.stdout.splitlines()
        assert len(lines) == 2 and "task 7 " in lines[0] and 'task "abc"' in lines[1] and "failure" in lines[1]
        out = run_cli("status", "--db", db)
        assert "queued=0 claimed=2 done=2" in out.stdout and "results=2" in out.stdout


def test_cli_usage_errors(tmp_path):
    out = run_cli("results", "--db", str(tmp_path / "missing.sqlite"))
    assert out.returncode == 2 and "no database" in out.stderr
    out = run_cli("enqueue", "x", "--params", "{bad", "--db", str(tmp_path / "x.sqlite"))
    assert out.returncode == 2 and "not JSON" in out.stderr


def test_cli_serve_prints_the_url_and_serves_demo_tasks(tmp_path):
    db = str(tmp_path / "serve.sqlite")
    proc = subprocess.Popen([sys.executable, "-m", "devserver", "serve", "--port", "0", "--db", db, "--demo"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for _ in range(10):
            line = proc.stdout.readline()
            if line.startswith("SERVER_URL="):
                url = line.strip().split("=", 1)[1]
                break
        assert url and url.endswith("/api"), proc.stderr.read() if proc.poll() is not None else url
        types = [requests.get(f"{url}/get_task", timeout=5).json()["task_type"] for _ in range(5)]
        assert sorted(types) == ["example"] * 2 + ["get_system_info"] * 3
    finally:
        console_ctrl_c() if WINDOWS else proc.terminate()  # its graceful stop: Ctrl+C / SIGTERM
        assert proc.wait(10) == 0
        proc.stdout.close()
        proc.stderr.close()


def test_restart_reuses_port_and_queue(tmp_path, http):
    s = HiveDevServer(str(tmp_path / "db.sqlite")).start()
    url = s.url
    s.enqueue("echo", task_id="survives")
    s.stop()
    try:
        assert s.start().url == url
        assert get_task(http, s).json()["id"] == "survives"
    finally:
        s.stop()


def test_wsgi_app_serves_v1_and_tallies_hand_outs_and_results(tmp_path):
    # The app real servers serve in tests/test_interop.py, called as they call it; two instances on
    # one file stand for two gunicorn workers.
    from wsgiref.util import setup_testing_defaults

    from devserver.wsgi import HiveApp

    def call(app: HiveApp, method: str, path: str, body: bytes = b"") -> tuple[str, dict]:
        environ: dict = {"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
                         "wsgi.input": io.BytesIO(body), "HTTP_X_WORKER_ID": "w1"}
        setup_testing_defaults(environ)
        status: list[str] = []
        out = b"".join(app(environ, lambda s, headers: status.append(s)))
        return status[0], json.loads(out)

    one, two = HiveApp(str(tmp_path / "q.sqlite")), HiveApp(str(tmp_path / "q.sqlite"))
    enqueue = {"tasks": [{"task_type": "echo", "params": {"n": 1}, "id": "a"}, {"task_type": "echo"}]}
    assert call(one, "POST", "/_devserver/enqueue", json.dumps(enqueue).encode()) == ("200 OK", {"status": "ok", "ids": ["a", 1]})
    assert call(one, "GET", "/api/get_task") == ("200 OK", {"id": "a", "task_type": "echo", "params": {"n": 1}})
    assert call(two, "GET", "/api/get_task")[1]["id"] == 1
    assert call(two, "GET", "/api/get_task")[1] == {"status": "no_tasks"}  # v1 has no requeue: once each
    for _ in range(2):
        assert call(two, "POST", "/api/submit_result", b'{"task_id": "a", "status": "success", "result": 1}')[0] == "200 OK"
    assert call(one, "GET", "/_devserver/tally")[1] == {
        "tasks": [{"id": "a", "handed_out": 1, "results": 2, "successes": 2},
                  {"id": 1, "handed_out": 1, "results": 0, "successes": 0}], "results": 2}
    status, answer = call(one, "POST", "/_devserver/enqueue", b'{"task": []}')
    assert status == "400 Bad Request" and "bad enqueue body" in answer["error"]
    assert call(one, "GET", "/api/nothing")[0] == "404 Not Found"


def test_demo_tasks_are_queued_on_the_first_run_only(tmp_path, http):
    """Issue 23.11: they were queued again at every start of `python main.py` once the first ones were done."""
    from devserver.server import DEMO_TASKS, start_demo

    db = str(tmp_path / "devserver.sqlite")
    s = start_demo(db)
    try:
        assert s.store.counts()["queued"] == len(DEMO_TASKS)
        for _ in DEMO_TASKS:
            assert submit(http, s, get_task(http, s).json()["id"], 1).status_code == 200
        assert s.store.counts()["done"] == len(DEMO_TASKS)
    finally:
        s.stop()
    again = start_demo(db)
    try:
        assert again.store.counts()["queued"] == 0
    finally:
        again.stop()


def test_every_db_flag_is_explained():
    """Issue 23.11: enqueue, results and status had a --db with no help."""
    from devserver.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        db = next(a for a in sub._actions if a.dest == "db")
        assert db.help and "SQLite" in db.help, name
