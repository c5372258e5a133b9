"""The PC's clock is not trusted blindly (issue 24.5, supervisor/host/clock.py): wall-time decisions
(how long a rolled-back version stays refused) stay right when the PC's clock is years off, from
the Date header of the server's answers. The PC's clock is injected; the server and the client are
real (a local HTTP server whose Date the test sets, the worker's own HiveClient)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from supervisor.host import clock
from supervisor.net.client import HiveClient
from supervisor.update import records
from supervisor.update.errors import UpdateRefused

YEAR = 365 * 86400.0
DAY = 86400.0


class DatedServer:
    """Answers get_task with no_tasks and the Date header the test chose (true time by default)."""

    def __init__(self) -> None:
        self.server_time: float | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def date_time_string(self, timestamp: float | None = None) -> str:
                return formatdate(owner.server_time if owner.server_time is not None else REAL_TIME(), usegmt=True)

            def do_GET(self) -> None:  # noqa: N802 - name fixed by the base class
                body = b'{"status": "no_tasks"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.client = HiveClient(f"http://127.0.0.1:{self.httpd.server_address[1]}/api", "w1", "2.0.0", 5.0, 5.0,
                                 1024 * 1024)

    def answer_at(self, server_time: float) -> None:
        self.server_time = server_time
        assert self.client.get_task() == "no_tasks"

    def stop(self) -> None:
        self.client.close()
        self.httpd.shutdown()
        self.httpd.server_close()


REAL_TIME = time.time


@pytest.fixture
def dated() -> Iterator[DatedServer]:
    srv = DatedServer()
    clock.reset()
    yield srv
    srv.stop()
    clock.reset()


def test_offset_parse_and_hold_decisions() -> None:
    assert clock.offset_for(1000.0, 1200.0) == 0.0  # within the bound: the PC's clock stands
    assert clock.offset_for(1000.0, 1000.0 + 5 * YEAR) == 5 * YEAR
    assert clock.offset_for(1000.0 + 5 * YEAR, 1000.0) == -5 * YEAR
    assert clock.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777.0
    assert clock.parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777.0  # obsolete RFC 850 form
    for junk in ("", "yesterday", "Sun, 06 Nov 1994 08:49:37", "Sun, 99 Nov 1994 08:49:37 GMT"):
        assert clock.parse_http_date(junk) is None, junk
    assert records.still_held(at=1000.0, now=1000.0 + 6 * DAY)
    assert not records.still_held(at=1000.0, now=1000.0 + 8 * DAY)
    assert records.still_held(at=1000.0 + DAY, now=1000.0)  # a little ahead: the clock moved back a bit
    assert not records.still_held(at=1000.0 + 5 * YEAR, now=1000.0)  # written by a clock years ahead


@pytest.mark.parametrize("pc_off", [5 * YEAR, -5 * YEAR], ids=["pc-clock-years-ahead", "pc-clock-years-behind"])
def test_a_rolled_back_version_is_held_by_the_server_s_time(tmp_path: Path, dated: DatedServer, monkeypatch,
                                                             pc_off: float) -> None:
    upd = tmp_path / "update"
    true_time = REAL_TIME()
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + pc_off)  # the PC's clock, years off
    dated.answer_at(true_time)  # the server's answers carry the true time
    records.remember_bad(upd, "9.1.0", "rolled back: the new worker exited before it was healthy")
    assert abs(records.bad_versions(upd)["9.1.0"]["at"] - true_time) < 5  # recorded in the server's time
    dated.answer_at(true_time + DAY)  # a day later by the server: still refused
    with pytest.raises(UpdateRefused, match="was rolled back on this PC"):
        records.refuse_if_bad(upd, "9.1.0")
    dated.answer_at(true_time + 8 * DAY)  # past the 7-day hold by the server: let in again
    records.refuse_if_bad(upd, "9.1.0")


def test_the_pc_clock_stands_while_it_agrees_with_the_server(tmp_path: Path, dated: DatedServer,
                                                            monkeypatch) -> None:
    upd = tmp_path / "update"
    pc = REAL_TIME()
    monkeypatch.setattr(time, "time", lambda: pc)
    dated.answer_at(pc + 120)  # two minutes apart: within the bound, no correction
    assert clock.now() == pc
    records.remember_bad(upd, "9.1.0", "rolled back")
    assert records.bad_versions(upd)["9.1.0"]["at"] == pc
    # An answer without a usable Date changes nothing.
    clock.server_said("not a date")
    clock.server_said(None)
    assert clock.now() == pc
