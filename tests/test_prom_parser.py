"""prom_pars against fixture product pages served by a real HTTP server on 127.0.0.1.

The pages in tests/fixtures/prom/ are hand-made in the shape of prom.ua product pages
(data-qaid markers, a "similar products" block carrying the same markers outside the
main block, scripts holding look-alike HTML). Extra endpoints answer slowly, with 500,
with 429, or reset the connection.
"""

from __future__ import annotations

import importlib.util
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from executor import api
from tasks.prom.batch import scrape
from tasks.prom.captcha import POLL, CaptchaStop, wait_for_person
from tasks.prom.fetch import FetchError, _describe, host_allowed, normalize_hosts
from tasks.prom.parse import parse_count, parse_number, parse_product_page, presence_status
from tasks.prom_parser import prom_pars

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "prom"
FAST = {"delay": 0, "timeout": 2.0, "retries": 1, "backoff": 0.01}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body in two packets cost a delayed ACK (40 ms)
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _page(self, name: str) -> bytes:
        return (FIXTURES / name).read_bytes()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        srv = self.server
        if self.path.startswith("http://"):  # asked as a proxy: any host name reaches these pages
            self.path = "/" + self.path.split("/", 3)[3]
        with srv.lock:
            srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
            hit = srv.hits[self.path]
            srv.headers_seen.append(dict(self.headers))
            srv.requests.append((self.headers.get("Host", ""), self.path, self.headers.get("Cookie")))
        parts = self.path.strip("/").split("/")
        kind, arg = parts[0], "/".join(parts[1:])
        if kind == "p" and (FIXTURES / arg).is_file():
            self._send(200, self._page(arg))
        elif kind == "gone":  # the site's 404: the not-found page with status 404
            self._send(404, self._page("not_found.html"))
        elif kind == "status":  # /status/<code>: an error page with that status
            self._send(int(arg), b"<html><body><h1>error</h1></body></html>")
        elif kind == "flaky":  # 500 on the first hit, then the page
            if hit == 1:
                self._send(500, b"<html><body>Internal Server Error</body></html>")
            else:
                self._send(200, self._page(arg))
        elif kind == "busy":  # 429 with Retry-After on the first hit, then the page
            if hit == 1:
                self._send(429, b"<html><body>Too Many Requests</body></html>", {"Retry-After": "0"})
            else:
                self._send(200, self._page(arg))
        elif kind == "slow":  # answers after longer than the client waits
            time.sleep(float(arg))
            self._send(200, self._page("in_stock_uk.html"))
        elif kind == "reset":  # closes the connection with a TCP RST, no answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif kind == "empty":
            self._send(200, b"")
        elif kind == "redirect":
            self.send_response(302)
            self.send_header("Location", f"/p/{arg}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "away":  # /away/<absolute URL>: a redirect to anywhere
            self.send_response(302)
            self.send_header("Location", arg)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "loop":  # redirects to itself forever
            self.send_response(301)
            self.send_header("Location", f"/loop/{hit}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "setcookie":  # /setcookie/<domain>: a session cookie for that Domain, and a page
            self._send(200, self._page("in_stock_uk.html"),
                       {"Set-Cookie": f"sid=s3cret; Domain={arg}; Path=/" if arg else "sid=s3cret; Path=/"})
        elif kind == "cp1251":  # a page in another charset, declared in Content-Type
            body = self._page(arg).decode("utf-8").encode("cp1251", errors="replace")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=windows-1251")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif kind == "person":  # a captcha a person solves by clicking: the button fills the window
            page = self._page("captcha.html").replace(b"</body>", (
                '<button id="solve" style="position:fixed;left:0;top:0;width:100vw;height:100vh;font-size:40px"'
                f' onclick="location.href = \'/p/{arg}\'">Я не робот</button></body>').encode())
            self._send(200, page)
        elif kind == "hang":  # headers never come: a page that waits on this never finishes loading
            srv.closing.wait(600)
            self.close_connection = True
        elif kind == "captcha403":
            self._send(403, self._page("captcha.html"))
        else:
            self._send(404, b"<html><body>no such fixture</body></html>")

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            pass  # the reset endpoint's socket is gone


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.headers_seen: list[dict[str, str]] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (Host, path, Cookie) of each request
        self.closing = threading.Event()  # releases the hang endpoint's waiters

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch):
    """These tests serve their pages on 127.0.0.1, so they allow it the way the worker would:
    through the prom_allowed_hosts setting the task reads (executor.api.settings())."""
    monkeypatch.setattr(api, "_settings", {"prom_allowed_hosts": ["127.0.0.1"]})


@pytest.fixture
def site():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.closing.set()
    srv.shutdown()
    srv.server_close()


def row(product_id, status_id, price=None, order_quantity=None, rating=None) -> dict:
    return {"product_id": product_id, "status_id": status_id, "price": price,
            "order_quantity": order_quantity, "rating": rating}


# -------------------------------------------------------------------------- the whole batch

def test_every_fixture_page_in_one_batch(site):
    pages = [
        ("in_stock_uk.html", row(1, 1, 1299.5, 15, 4.8)),
        ("unavailable_uk.html", row(2, 0, 450.0, None, 5.0)),
        ("ready_to_ship_uk.html", row(3, 2, 89.9, 15, 4.0)),
        ("made_to_order_uk.html", row(4, 3, 12500.0, 1234, 3.1)),  # no own rating: the first on the page
        ("deleted_warning.html", row(5, 4)),  # warning panel: nothing else read
        ("not_found.html", row(6, 0, None, None, 3.1)),
        ("missing_price.html", row(7, 1, None, 2, 4.9)),
        ("malformed_rating.html", row(8, 1, 150.0, 5, None)),
        ("malformed_price.html", row(9, 2, None, None, 3.5)),
        ("unknown_status.html", row(10, 5, 10.0, 1, 3.1)),
        ("in_stock_ru.html", row(11, 1, 2100.0, 7, 4.6)),
        ("unavailable_ru.html", row(12, 0, 75.25, None, 3.1)),
        ("ready_to_ship_ru.html", row(13, 2, 640.0, 100, 4.0)),
        ("made_to_order_ru.html", row(14, 3, 18000.0, 12, 4.9)),
        ("whitespace_nesting.html", row(15, 2, 2450.0, 1020, 4.7)),
        ("no_main_block.html", row(16, 5)),  # status, price, counter: inside the block only
        ("rating_outside_block.html", row(17, 1, 777.0, 8, 4.4)),
        ("price_counter_outside_block.html", row(18, 2, None, None, 4.1)),
        ("presence_outside_block.html", row(19, 5, 120.0, 6, 3.1)),
        ("warning_at_bottom.html", row(20, 4)),
    ]
    products = [{"product_id": r["product_id"], "url": site.url(f"p/{name}")} for name, r in pages]
    result = prom_pars(products_to_scrape=products, **FAST)
    assert result == {"status": "success", "data": [r for _, r in pages]}


def test_http_errors_and_network_trouble_give_per_product_statuses(site):
    products = [
        {"product_id": "a", "url": site.url("p/in_stock_uk.html")},
        {"product_id": "b", "url": site.url("gone/1")},  # 404 with the not-found page
        {"product_id": "c", "url": site.url("status/410")},
        {"product_id": "d", "url": site.url("status/500")},  # 500 even after the retry
        {"product_id": "e", "url": site.url("slow/3")},  # read timeout, twice
        {"product_id": "f", "url": site.url("reset/1")},  # connection reset, twice
        {"product_id": "g", "url": site.url("status/403")},
        {"product_id": "h", "url": site.url("empty/1")},
        {"product_id": "i", "url": "http://127.0.0.1:9/refused"},  # nothing listens on port 9
        {"product_id": "j", "url": "not a url"},
        {"product_id": "k", "url": site.url("p/in_stock_ru.html")},
    ]
    started = time.monotonic()
    result = prom_pars(products_to_scrape=products, delay=0, timeout=0.4, retries=1, backoff=0.01)
    elapsed = time.monotonic() - started
    assert result == {"status": "success", "data": [
        row("a", 1, 1299.5, 15, 4.8),
        row("b", 0, None, None, 3.1), row("c", 0),  # a 404 page is read like any page
        row("d", 5), row("e", 5), row("f", 5), row("g", 5), row("h", 5), row("i", 5), row("j", 5),
        row("k", 1, 2100.0, 7, 4.6),
    ]}
    # retried once each: 500, timeout and reset; a 403/404 is not retried
    assert site.hits["/status/500"] == 2
    assert site.hits["/slow/3"] == 2
    assert site.hits["/reset/1"] == 2
    assert site.hits["/status/403"] == 1
    assert site.hits["/gone/1"] == 1
    assert elapsed < 5, elapsed  # two 0.4 s timeouts, no long waits


def test_retries_recover_from_a_500_and_a_429(site):
    products = [{"product_id": 1, "url": site.url("flaky/in_stock_uk.html")},
                {"product_id": 2, "url": site.url("busy/made_to_order_ru.html")},
                {"product_id": 3, "url": site.url("redirect/ready_to_ship_uk.html")}]
    result = prom_pars(products_to_scrape=products, **FAST)
    assert result["data"] == [row(1, 1, 1299.5, 15, 4.8), row(2, 3, 18000.0, 12, 4.9), row(3, 2, 89.9, 15, 4.0)]
    assert site.hits["/flaky/in_stock_uk.html"] == 2
    assert site.hits["/busy/made_to_order_ru.html"] == 2


def test_charset_from_content_type(site):
    products = [{"product_id": 1, "url": site.url("cp1251/ready_to_ship_ru.html")},
                {"product_id": 2, "url": site.url("cp1251/whitespace_nesting.html")}]
    result = prom_pars(products_to_scrape=products, **FAST)
    assert result["data"] == [row(1, 2, 640.0, 100, 4.0), row(2, 2, 2450.0, 1020, 4.7)]


def test_retries_zero_means_one_attempt(site):
    result = prom_pars(products_to_scrape=[{"product_id": 1, "url": site.url("flaky/in_stock_uk.html")}],
                       delay=0, timeout=2, retries=0)
    assert result["data"] == [row(1, 5)]
    assert site.hits["/flaky/in_stock_uk.html"] == 1


def test_entries_without_product_id_or_url_are_skipped_and_ids_echoed_unchanged(site):
    page = site.url("p/in_stock_ru.html")
    products = [
        {"product_id": "x-1", "url": page},
        {"url": page},
        {"product_id": None, "url": page},
        {"product_id": "", "url": page},
        {"product_id": 7},
        {"product_id": 8, "url": ""},
        {"product_id": 9, "url": None},
        "not an object",
        {"product_id": 0, "url": page, "extra": "ignored"},
        {"product_id": 12345678901234, "url": page},
    ]
    result = prom_pars(products_to_scrape=products, **FAST)
    assert result == {"status": "success", "data": [
        row("x-1", 1, 2100.0, 7, 4.6), row(0, 1, 2100.0, 7, 4.6), row(12345678901234, 1, 2100.0, 7, 4.6)]}
    assert site.hits["/p/in_stock_ru.html"] == 3


def test_empty_and_bad_params():
    assert prom_pars(products_to_scrape=[], delay=0) == {"status": "success", "data": []}
    assert prom_pars(products_to_scrape=[{"url": "http://127.0.0.1:9/"}], delay=0) == {"status": "success", "data": []}
    missing = prom_pars()
    assert missing["status"] == "failure" and "products_to_scrape" in missing["message"]
    not_list = prom_pars(products_to_scrape={"product_id": 1})
    assert not_list["status"] == "failure" and "list" in not_list["message"]
    bad = prom_pars(products_to_scrape=[], timeout="soon")
    assert bad["status"] == "failure" and bad["message"].startswith("bad option")
    bad = prom_pars(products_to_scrape=[], headers={"X-Count": 1})
    assert bad["status"] == "failure" and "headers" in bad["message"]
    unknown = prom_pars(products_to_scrape=[{"product_id": 1, "url": "http://127.0.0.1:9/"}], backend="lynx")
    assert unknown["status"] == "failure" and "lynx" in unknown["message"]


def test_unknown_params_are_ignored(site):
    result = prom_pars(products_to_scrape=[{"product_id": 1, "url": site.url("p/in_stock_uk.html")}],
                       some_future_param=True, **FAST)
    assert result == {"status": "success", "data": [row(1, 1, 1299.5, 15, 4.8)]}


def test_captcha_stops_the_batch(site):
    products = [{"product_id": 1, "url": site.url("p/in_stock_uk.html")},
                {"product_id": 2, "url": site.url("p/captcha.html")},
                {"product_id": 3, "url": site.url("p/in_stock_ru.html")}]
    result = prom_pars(products_to_scrape=products, **FAST)
    assert result["status"] == "failure"
    assert result["message"].startswith("captcha on " + site.url("p/captcha.html"))
    assert "product 2" in result["message"] and "2 of 3" in result["message"]
    assert "\n" not in result["message"]
    assert "/p/in_stock_ru.html" not in site.hits  # nothing fetched after the captcha


def test_captcha_on_an_error_status_is_still_a_captcha(site):
    result = prom_pars(products_to_scrape=[{"product_id": 1, "url": site.url("captcha403/x")}], **FAST)
    assert result["status"] == "failure" and result["message"].startswith("captcha")
    assert site.hits["/captcha403/x"] == 1


def test_requests_carry_browser_like_headers_and_one_session(site):
    products = [{"product_id": i, "url": site.url("p/in_stock_uk.html")} for i in range(3)]
    prom_pars(products_to_scrape=products, headers={"X-Extra": "1"}, **FAST)
    seen = site.headers_seen
    assert len(seen) == 3
    for headers in seen:
        assert headers["User-Agent"].startswith("Mozilla/5.0") and "Chrome/" in headers["User-Agent"]
        assert headers["Accept-Language"].startswith("uk-UA")
        assert "text/html" in headers["Accept"]
        assert headers["X-Extra"] == "1"


def test_delay_between_products(site):
    products = [{"product_id": i, "url": site.url("p/in_stock_uk.html")} for i in range(3)]
    started = time.monotonic()
    prom_pars(products_to_scrape=products, delay=0.25, timeout=2, retries=0)
    assert 0.5 <= time.monotonic() - started < 2.0  # two pauses: between 1-2 and 2-3


def test_whole_body_deadline_covers_a_slow_drip():
    """A server that trickles the body never trips the per-read timeout; the body deadline ends it."""
    class Drip(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(2_000_000))  # 1 KB per 10 ms: 20 s in all
            self.end_headers()
            try:
                for _ in range(2000):
                    self.wfile.write(b"x" * 1000)
                    self.wfile.flush()
                    time.sleep(0.01)
            except OSError:
                pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        started = time.monotonic()
        result = prom_pars(products_to_scrape=[{"product_id": 1, "url": f"http://127.0.0.1:{srv.server_address[1]}/"}],
                           delay=0, timeout=0.5, retries=0)
        assert result["data"] == [row(1, 5)]
        assert time.monotonic() - started < 5  # the deadline is checked between 64 KB chunks (~0.7 s here)
    finally:
        srv.shutdown()
        srv.server_close()


# -------------------------------------------------------------------------- the replaceable fetch step

def test_scrape_with_a_custom_fetcher():
    pages = {"u1": (200, (FIXTURES / "ready_to_ship_ru.html").read_text(encoding="utf-8")),
             "u2": (404, ""), "u3": (503, "<html></html>")}

    def fetch(url):
        if url == "boom":
            raise FetchError("connection reset")
        return pages[url]

    rows = scrape([(1, "u1"), (2, "u2"), (3, "u3"), (4, "boom")], fetch)
    assert rows == [row(1, 2, 640.0, 100, 4.0), row(2, 0), row(3, 5), row(4, 5)]


def test_captcha_fallback_fetcher_takes_over():
    captcha = (FIXTURES / "captcha.html").read_text(encoding="utf-8")
    good = (FIXTURES / "in_stock_uk.html").read_text(encoding="utf-8")
    first_calls, browser_calls = [], []

    def first(url):
        first_calls.append(url)
        return 200, captcha if url == "u2" else good

    def browser(url):
        browser_calls.append(url)
        return 200, good

    rows = scrape([(1, "u1"), (2, "u2"), (3, "u3")], first, captcha_fallback=lambda: browser)
    assert rows == [row(i, 1, 1299.5, 15, 4.8) for i in (1, 2, 3)]
    assert first_calls == ["u1", "u2"] and browser_calls == ["u2", "u3"]

    def stubborn(url):
        return 200, captcha

    with pytest.raises(CaptchaStop, match="captcha on u1"):
        scrape([(1, "u1")], stubborn, captcha_fallback=lambda: stubborn)


def test_the_visible_browser_waits_for_a_person_to_solve_the_captcha(caplog):
    captcha = (FIXTURES / "captcha.html").read_text(encoding="utf-8")
    good = (FIXTURES / "in_stock_uk.html").read_text(encoding="utf-8")
    shown, pauses = [captcha, captcha, good], []
    # solved on the third look: the page after it is what the fetcher returns
    assert wait_for_person("u1", captcha, lambda: shown.pop(0), wait=60, sleep=pauses.append) == good
    assert pauses == [POLL] * 3 and shown == []
    assert [r.getMessage() for r in caplog.records] == ["captcha on u1: waiting up to 60 s for a person to solve it"]

    # nobody solves it: the captcha page is returned once the wait is up, and the batch then stops
    looks = []
    started = time.monotonic()
    assert wait_for_person("u1", captcha, lambda: looks.append(1) or captcha, wait=0.05, sleep=lambda s: None) == captcha
    assert looks and time.monotonic() - started < 5

    # no captcha, or no wait asked for (the headless backend): no second look at all
    def never():
        raise AssertionError("looked again")

    caplog.clear()
    assert wait_for_person("u1", good, never, wait=60) == good
    assert wait_for_person("u1", captcha, never, wait=0) == captcha
    assert not caplog.records


HAVE_SELENIUM = importlib.util.find_spec("selenium") is not None


@pytest.mark.skipif(HAVE_SELENIUM, reason="selenium is installed here")
def test_selenium_options_without_selenium_fail_readably(site):
    products = [{"product_id": 1, "url": site.url("p/captcha.html")}]
    result = prom_pars(products_to_scrape=products, captcha_fallback=True, **FAST)
    assert result["status"] == "failure"
    assert result["message"].startswith("captcha on") and "selenium" in result["message"]
    result = prom_pars(products_to_scrape=products, backend="selenium", **FAST)
    assert result["status"] == "failure" and "selenium" in result["message"]


@pytest.mark.slow  # a real Chromium; the parsing is the requests backend's, tested above
@pytest.mark.skipif(not HAVE_SELENIUM, reason="selenium (optional) is not installed")
def test_selenium_backend(site):
    products = [{"product_id": 1, "url": site.url("p/in_stock_uk.html")},
                {"product_id": 2, "url": site.url("p/not_found.html")}]
    result = prom_pars(products_to_scrape=products, backend="selenium", delay=0, timeout=30)
    if result["status"] == "failure" and "cannot start Chrome" in result["message"]:
        pytest.skip(result["message"])
    assert result == {"status": "success", "data": [row(1, 1, 1299.5, 15, 4.8), row(2, 0, None, None, 3.1)]}


# The visible browser's hand-over, with a person clicking, runs through the real worker:
# tests/test_prom_e2e.py::test_captcha_hand_over_to_a_visible_browser_where_a_person_clicks.


# -------------------------------------------------------------------------- parsing details

@pytest.mark.parametrize(("text", "status"), [
    ("В наявності", 1), ("В наличии", 1), ("  в   НАЯВНОСТІ \n", 1),
    ("Недоступний", 0), ("Недоступен", 0),
    ("Готово до відправки", 2), ("Готово к отправке", 2), ("готово к\u00a0отправке", 2),
    ("Під замовлення", 3), ("Под заказ", 3), ("Под заказ (5 дней)", 3),
    ("Немає в наявності", 5), ("Нет в наличии", 5), ("Не в наличии", 5),  # negated: not 1.0.9's "in stock"
    ("Очікується", 5), ("", 5), ("Закінчується", 5),
    # contained anywhere, as 1.0.9 matched it
    ("Товар в наявності", 1), ("Зараз недоступний", 0), ("Уточнюйте: під замовлення", 3),
    ("Відправка: готово до відправки", 2),
])
def test_presence_texts(text, status):
    assert presence_status(text) == status


@pytest.mark.parametrize(("text", "count"), [
    ("Продано 15 шт.", 15), ("15 замовлень", 15), ("Куплено 100+ разів", 100), ("Продано 1\u00a0234 шт.", 1234),
    ("Продано 1 234 567 шт.", 1234567), ("Продано 2 шт. за 30 днів", 2), ("Ще немає замовлень", None), ("", None),
])
def test_order_counter_texts(text, count):
    assert parse_count(text) == count


@pytest.mark.parametrize(("value", "expected"), [
    ("1299.50", 1299.5), (" 1 299,50 ", 1299.5), ("100", 100.0), ("0", 0.0), (None, None), ("", None), ("  ", None),
])
def test_numbers(value, expected):
    assert parse_number(value) == expected


@pytest.mark.parametrize("value", ["abc", "-5", "nan", "inf", "1.2.3", "12 грн"])
def test_malformed_numbers(value):
    with pytest.raises(ValueError):
        parse_number(value)


def test_rating_out_of_range_is_malformed():
    page = parse_product_page('<div data-qaid="main_product_info"><span data-qaid="product_presence">В наявності</span>'
                              '<div data-qaid="product_rating" data-qarating="7.5"></div></div>')
    assert (page.status_id, page.rating, page.problems) == (1, None, ("rating",))


def test_markers_are_read_inside_the_main_block_only():
    page = parse_product_page((FIXTURES / "unavailable_uk.html").read_text(encoding="utf-8"))
    # the similar-products card below has a counter "Продано 99 шт." and status "Під замовлення"
    assert (page.status_id, page.order_quantity) == (0, None)


# -------------------------------------------------------------------------- only the allowed hosts

@pytest.fixture
def proxy(site, monkeypatch):
    """The fixture server as the HTTP proxy of requests: any host name reaches the pages, and
    site.requests records which host each request was for (nothing leaves 127.0.0.1)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", site.base)
    monkeypatch.setenv("http_proxy", site.base)
    return site


def test_default_setting_fetches_only_prom_ua_and_its_subdomains(proxy, monkeypatch, caplog):
    monkeypatch.setattr(api, "_settings", {})  # outside a worker: the default, prom.ua
    products = [{"product_id": 1, "url": "http://prom.ua/p/in_stock_uk.html"},
                {"product_id": 2, "url": "http://my.shop.prom.ua/p/in_stock_ru.html"},
                {"product_id": 3, "url": "http://127.0.0.1:9/p/in_stock_uk.html"},
                {"product_id": 4, "url": "http://notprom.ua/p/in_stock_uk.html"},
                {"product_id": 5, "url": "http://prom.ua.evil.example/p/in_stock_uk.html"},
                {"product_id": 6, "url": "http://user@prom.ua@192.168.1.1/p/in_stock_uk.html"},
                {"product_id": 7, "url": "file:///etc/passwd"}]
    with caplog.at_level("WARNING"):
        result = prom_pars(products_to_scrape=products, **FAST)
    assert result == {"status": "success", "data": [
        row(1, 1, 1299.5, 15, 4.8), row(2, 1, 2100.0, 7, 4.6), row(3, 5), row(4, 5), row(5, 5), row(6, 5), row(7, 5)]}
    assert [host for host, _, _ in proxy.requests] == ["prom.ua", "my.shop.prom.ua"]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 5 and all("status 5" in line for line in refused)
    assert "'127.0.0.1' is not in prom_allowed_hosts" in refused[0]


def test_every_redirect_hop_is_checked(proxy, monkeypatch):
    monkeypatch.setattr(api, "_settings", {"prom_allowed_hosts": ["prom.test"]})
    products = [
        {"product_id": 1, "url": "http://prom.test/away/http://m.prom.test/p/in_stock_uk.html"},  # allowed hop
        {"product_id": 2, "url": "http://prom.test/away/http://192.168.0.1/p/in_stock_ru.html"},
        {"product_id": 3, "url": "http://prom.test/away/http://localhost:8080/p/in_stock_ru.html"},
        {"product_id": 4, "url": "http://prom.test/away/file:///etc/passwd"},
        {"product_id": 5, "url": "http://prom.test/loop/0"},  # endless redirects
    ]
    result = prom_pars(products_to_scrape=products, **FAST)
    assert result["data"] == [row(1, 1, 1299.5, 15, 4.8), row(2, 5), row(3, 5), row(4, 5), row(5, 5)]
    assert "/p/in_stock_ru.html" not in proxy.hits  # the off-list hops were never requested
    hosts = {host for host, _, _ in proxy.requests}
    assert hosts == {"prom.test", "m.prom.test"}
    assert proxy.hits["/loop/0"] == 1 and len([p for _, p, _ in proxy.requests if p.startswith("/loop/")]) == 11


def test_cookies_stay_with_the_host_that_set_them(proxy, monkeypatch):
    """a.prom.test sets a cookie for Domain=prom.test; a browser-like jar would send it to every
    subdomain. Here it goes back to a.prom.test only."""
    monkeypatch.setattr(api, "_settings", {"prom_allowed_hosts": ["prom.test"]})
    products = [{"product_id": 1, "url": "http://a.prom.test/setcookie/prom.test"},
                {"product_id": 2, "url": "http://b.prom.test/p/in_stock_ru.html"},
                {"product_id": 3, "url": "http://prom.test/p/in_stock_ru.html"},
                {"product_id": 4, "url": "http://a.prom.test/p/in_stock_uk.html"}]
    result = prom_pars(products_to_scrape=products, **FAST)
    assert [r["status_id"] for r in result["data"]] == [1, 1, 1, 1]
    assert proxy.requests == [("a.prom.test", "/setcookie/prom.test", None),
                              ("b.prom.test", "/p/in_stock_ru.html", None),
                              ("prom.test", "/p/in_stock_ru.html", None),
                              ("a.prom.test", "/p/in_stock_uk.html", "sid=s3cret")]


def test_server_text_reaches_the_log_escaped(caplog):
    products = [{"product_id": 1, "url": "http://10.0.0.1/\x1b[2J\nFAKE LOG LINE"},
                {"product_id": 2, "url": "http://[::1/x\x07"}]
    with caplog.at_level("WARNING"):
        result = prom_pars(products_to_scrape=products, **FAST)
    assert result["data"] == [row(1, 5), row(2, 5)]
    lines = [r.getMessage() for r in caplog.records if "product" in r.getMessage()]
    assert len(lines) == 2
    assert all(c.isprintable() for line in lines for c in line), lines
    assert "\\x1b[2J\\nFAKE LOG LINE" in lines[0]
    # error texts of the libraries may quote server data as it came
    assert _describe(OSError("bad \x1b[2J header\r\nX: y")) == "OSError: bad \\x1b[2J header X: y"


def test_a_cookie_header_option_is_refused():
    bad = prom_pars(products_to_scrape=[{"product_id": 1, "url": "http://127.0.0.1:9/"}], headers={"cookie": "a=1"})
    assert bad["status"] == "failure" and bad["message"].startswith("bad option") and "Cookie" in bad["message"]


@pytest.mark.parametrize(("host", "allowed"), [
    ("prom.ua", True), ("PROM.UA.", True), ("my.prom.ua", True), ("a.b.prom.ua", True),
    ("xprom.ua", False), ("prom.ua.evil.example", False), ("ua", False), ("", False), (None, False),
])
def test_host_allowed(host, allowed):
    assert host_allowed(host, normalize_hosts(["prom.ua"])) is allowed
    assert normalize_hosts(["*.Prom.UA.", ".prom.ua", "prom.ua", " "]) == ("prom.ua",)


def test_import_is_cheap_and_does_not_load_heavy_modules():
    code = ("import sys; import tasks.prom_parser; "
            "heavy = [m for m in ('selenium', 'requests', 'selectolax') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30)


def test_dev_reload_watches_every_module_of_the_task():
    # --dev reloads on a save under a watched folder (watched recursively, supervisor/reloader.py):
    # the task's entry and each helper module in tasks/prom/ must lie under one.
    from supervisor.reloader import Reloader

    folders = [p for p in Reloader(arbiter=None, config_path=None).watched if p.is_dir()]
    modules = [ROOT / "tasks" / "prom_parser.py", *sorted((ROOT / "tasks" / "prom").glob("*.py"))]
    assert len(modules) > 2
    for module in modules:
        assert any(module.is_relative_to(folder) for folder in folders), (module, folders)
