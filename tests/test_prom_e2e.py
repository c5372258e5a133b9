"""prom_pars through the real worker against the dev server, pages served on 127.0.0.1 (issue 8)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import psutil
import pytest
from conftest import MAIN, ROOT, clean_env, result_of, results_for, wait_for
from support.xdisplay import Xvfb, click, xvfb_available
from test_prom_parser import row, site  # noqa: F401 - the fixture pages' server

from common.vocabulary import TOKEN_ENV
from tasks.prom import fetch, fetch_browser

# The fixture pages are on 127.0.0.1: allowed explicitly, as an operator would (default: prom.ua only).
LOOPBACK = {"HIVE_PROM_ALLOWED_HOSTS": "127.0.0.1"}

PAGES = [
    ("in_stock_uk.html", row(1, 1, 1299.5, 15, 4.8)),
    ("unavailable_ru.html", row("p-2", 0, 75.25, None, 3.1)),
    ("made_to_order_uk.html", row(3, 3, 12500.0, 1234, 3.1)),
    ("deleted_warning.html", row(4, 4)),
    ("not_found.html", row(5, 0, None, None, 3.1)),
    ("rating_outside_block.html", row(8, 1, 777.0, 8, 4.4)),
    ("malformed_rating.html", row(6, 1, 150.0, 5, None)),
    ("whitespace_nesting.html", row(7, 2, 2450.0, 1020, 4.7)),
]


def test_prom_pars_end_to_end_exact_result_list(server, start_worker, site):  # noqa: F811
    products = [{"product_id": r["product_id"], "url": site.url(f"p/{name}")} for name, r in PAGES]
    products.insert(2, {"url": site.url("p/in_stock_uk.html")})  # no product_id: skipped, as 1.0.x did
    server.enqueue("prom_pars", {"products_to_scrape": products, "delay": 0}, task_id=101)
    server.enqueue("prom_pars", {"products_to_scrape": [{"product_id": 9, "url": site.url("p/captcha.html")}],
                                 "delay": 0}, task_id=102)
    w = start_worker(server.url, env=LOOPBACK)
    by_id = results_for(server, [101, 102], timeout=60)
    ok = by_id[101][0]
    assert ok["status"] == "success" and ok["result"] == [r for _, r in PAGES]
    captcha = by_id[102][0]
    assert captcha["status"] == "failure" and captcha["result"]["kind"] == "task_failed"
    assert captcha["result"]["error"].startswith("captcha")
    assert w.proc.poll() is None


def test_a_worker_with_the_default_setting_fetches_nothing_from_loopback(server, start_worker, site):  # noqa: F811
    products = [{"product_id": 1, "url": site.url("p/in_stock_uk.html")},
                {"product_id": 2, "url": site.url("away/" + site.url("p/in_stock_ru.html"))}]
    server.enqueue("prom_pars", {"products_to_scrape": products, "delay": 0}, task_id=201)
    w = start_worker(server.url)
    by_id = results_for(server, [201], timeout=60)
    assert by_id[201][0]["status"] == "success" and by_id[201][0]["result"] == [row(1, 5), row(2, 5)]
    assert site.hits == {}  # not one request reached the PC's own network
    refused = wait_for(lambda: [line for line in w.log().splitlines() if "refused" in line], 10)
    assert len(refused) == 2 and all("not in prom_allowed_hosts" in line for line in refused), refused


# -------------------------------------------------------------------------- a real Chromium in the loop
# Needs Debian's chromium + chromium-driver + xvfb (apt) and selenium (requirements-browser.txt);
# .ci/run installs them. Each test runs the real worker, whose executor drives the browser.

HAVE_SELENIUM = importlib.util.find_spec("selenium") is not None
HAVE_CHROME = bool(fetch_browser._which(fetch_browser.CHROME_NAMES) and fetch_browser._which(fetch_browser.CHROMEDRIVER_NAMES))
needs_browser = pytest.mark.skipif(
    not (HAVE_SELENIUM and HAVE_CHROME),
    reason="needs selenium (pip install -r requirements-browser.txt) and chromium + chromedriver "
           "(apt-get install -y chromium chromium-driver xvfb)")
needs_display = pytest.mark.skipif(not xvfb_available(), reason="needs Xvfb for the visible browser (apt-get install -y xvfb)")

BROWSER_NAMES = ("chrome", "chromium", "chromedriver")
# A task's Chromium counts toward its tree: the config's 256 MB for the requests backend is far too little.
BROWSER_LIMITS = "prom_pars = {time = %d, cpu = 0, memory_mb = %d}"


def browser_processes(w) -> list[psutil.Process]:
    """Chrome/chromedriver processes of this worker: found by tree token, or by a working
    directory inside the worker's home (where the executors' scratch folders are)."""
    token = f"{w.pid}-"
    home = str(w.home)
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if not any(n in (proc.info["name"] or "").lower() for n in BROWSER_NAMES):
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TOKEN_ENV, "").startswith(token) or proc.cwd().startswith(home):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found



def _serves_next(server, site, tid):  # noqa: F811
    server.enqueue("prom_pars", {"products_to_scrape": [{"product_id": 1, "url": site.url("p/in_stock_uk.html")}],
                                 "delay": 0}, task_id=tid)
    r = result_of(server, tid, timeout=90)
    assert r["status"] == "success" and r["result"] == [row(1, 1, 1299.5, 15, 4.8)], r


@pytest.mark.slow
@needs_browser
def test_selenium_backend_through_the_worker_headless(server, start_worker, site):  # noqa: F811
    products = [{"product_id": 1, "url": site.url("p/in_stock_uk.html")},
                {"product_id": 2, "url": site.url("p/not_found.html")},
                {"product_id": 3, "url": site.url("p/deleted_warning.html")},
                {"product_id": 4, "url": site.url("p/rating_outside_block.html")},
                # Chrome follows this redirect itself: the resolver rules stop it at the next hop
                {"product_id": 5, "url": site.url(f"away/http://localhost:{site.server_address[1]}/p/in_stock_ru.html")},
                {"product_id": 6, "url": "http://192.168.0.1/p/in_stock_uk.html"},  # refused before Chrome is sent
                {"product_id": 7, "url": site.url("p/price_counter_outside_block.html")}]
    server.enqueue("prom_pars", {"products_to_scrape": products, "backend": "selenium", "delay": 0,
                                 "timeout": 30}, task_id="sel")
    w = start_worker(server.url, env=dict(LOOPBACK, HIVE_TASK_LIMITS=BROWSER_LIMITS % (300, 2500)))
    r = result_of(server, "sel", timeout=90)
    assert r["status"] == "success", r["result"]
    assert r["result"] == [row(1, 1, 1299.5, 15, 4.8), row(2, 0, None, None, 3.1), row(3, 4),
                           row(4, 1, 777.0, 8, 4.4), row(5, 5), row(6, 5), row(7, 2, None, None, 4.1)]
    assert "/p/in_stock_ru.html" not in site.hits  # the off-list hop was never requested
    assert site.headers_seen[0]["User-Agent"] == fetch.BROWSER_HEADERS["User-Agent"]  # a real browser asked
    wait_for(lambda: not browser_processes(w), 20, what="the task's Chrome to be gone")
    assert "killed them" not in w.log()  # the fetcher closed its whole browser, crash handlers included
    assert w.proc.poll() is None


@pytest.mark.slow
@needs_browser
@needs_display
def test_captcha_hand_over_to_a_visible_browser_where_a_person_clicks(server, start_worker, site):  # noqa: F811
    """requests meets a captcha; the worker opens a visible Chrome on it; the test, playing the
    person at the PC, clicks the captcha's button with the mouse; the batch goes on in that window."""
    products = [{"product_id": 1, "url": site.url("p/in_stock_uk.html")},
                {"product_id": 2, "url": site.url("person/made_to_order_uk.html")},
                {"product_id": 3, "url": site.url("p/in_stock_ru.html")}]
    with Xvfb() as display:
        server.enqueue("prom_pars", {"products_to_scrape": products, "delay": 0, "captcha_fallback": True,
                                     "captcha_wait": 120}, task_id="cap")
        w = start_worker(server.url, env=dict(LOOPBACK, DISPLAY=display, HIVE_TASK_LIMITS=BROWSER_LIMITS % (300, 2500)))
        # the requests fetch, then the visible browser's
        wait_for(lambda: site.hits.get("/person/made_to_order_uk.html", 0) >= 2, 60, what="the visible browser")
        visible = [p for p in browser_processes(w) if "chrom" in p.name().lower() and "--type=" not in " ".join(p.cmdline())
                   and "driver" not in p.name()]
        assert visible and all("--headless" not in " ".join(p.cmdline()) for p in visible), visible

        def person_solves() -> bool:
            if "/p/made_to_order_uk.html" in site.hits:
                return True
            click(display)  # until the page has painted, a click may land on nothing: try again
            return False

        wait_for(person_solves, 60, interval=0.5, what="the click to solve the captcha")
        r = result_of(server, "cap", timeout=90)
    assert r["status"] == "success", r["result"]
    assert r["result"] == [row(1, 1, 1299.5, 15, 4.8), row(2, 3, 12500.0, 1234, 3.1), row(3, 1, 2100.0, 7, 4.6)]
    assert site.hits["/p/in_stock_ru.html"] == 1  # the product after the captcha: in the visible window
    wait_for(lambda: not browser_processes(w), 20, what="the visible Chrome to be closed")


@pytest.mark.slow
@needs_browser
def test_a_chromium_tree_past_the_memory_limit_is_killed(server, start_worker, site):  # noqa: F811
    # headless Chromium's tree is ~0.9 GB of summed RSS when idle; the page adds 640 MB/s
    env = dict(LOOPBACK, HIVE_TASK_LIMITS=BROWSER_LIMITS % (120, 1600))
    server.enqueue("prom_pars", {"products_to_scrape": [{"product_id": 1, "url": site.url("p/eats_memory.html")}],
                                 "backend": "selenium", "delay": 0, "timeout": 110}, task_id="mem")
    w = start_worker(server.url, env=env)
    wait_for(lambda: "/p/eats_memory.html" in site.hits, 60, what="the browser to open the page")
    assert len(browser_processes(w)) >= 3  # chromedriver, chrome and its helpers carry the tree token
    r = result_of(server, "mem", timeout=90)
    assert r["status"] == "failure" and r["result"]["kind"] == "memory_limit", r
    assert "memory limit of 1600 MB reached" in r["result"]["error"]
    killed = re.search(r"in (\d+) process", r["result"]["error"])
    assert killed and int(killed.group(1)) >= 5, r["result"]["error"]  # the whole Chromium tree was counted
    wait_for(lambda: not browser_processes(w), 20, what="no chrome process left")
    _serves_next(server, site, "after-mem")
    assert w.proc.poll() is None


@pytest.mark.slow
@needs_browser
def test_a_page_that_never_finishes_loading_hits_the_time_limit(server, start_worker, site):  # noqa: F811
    env = dict(LOOPBACK, HIVE_TASK_LIMITS=BROWSER_LIMITS % (15, 0))
    server.enqueue("prom_pars", {"products_to_scrape": [{"product_id": 1, "url": site.url("p/never_loads.html")}],
                                 "backend": "selenium", "delay": 0, "timeout": 110}, task_id="hang")
    w = start_worker(server.url, env=env)
    wait_for(lambda: "/hang/pixel.png" in site.hits, 60, what="the browser waiting on the image")
    assert browser_processes(w)
    r = result_of(server, "hang", timeout=90)
    assert r["status"] == "failure" and r["result"]["kind"] == "time_limit", r
    assert "time limit of 15 s reached" in r["result"]["error"]
    wait_for(lambda: not browser_processes(w), 20, what="no chrome process left")
    _serves_next(server, site, "after-hang")
    assert w.proc.poll() is None


def test_self_test_says_whether_selenium_is_carried(tmp_path):
    got = subprocess.run([sys.executable, str(MAIN), "--self-test", "--home", str(tmp_path)], cwd=str(ROOT),
                         env=clean_env(), capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    if HAVE_SELENIUM:
        import selenium

        assert f"optional: selenium {selenium.__version__} bundled" in got.stdout.splitlines()
    else:
        assert "optional: selenium not bundled" in got.stdout.splitlines()
