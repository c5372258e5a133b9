"""prom_pars through the real worker against the dev server, pages served on 127.0.0.1 (issue 8)."""

from __future__ import annotations

from conftest import results_by_id, wait_for
from test_prom_parser import row, site  # noqa: F401 - the fixture pages' server

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
    by_id = wait_for(lambda: {101, 102} <= set(results_by_id(server)) and results_by_id(server), 60)
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
    by_id = wait_for(lambda: 201 in results_by_id(server) and results_by_id(server), 60)
    assert by_id[201][0]["status"] == "success" and by_id[201][0]["result"] == [row(1, 5), row(2, 5)]
    assert site.hits == {}  # not one request reached the PC's own network
    refused = wait_for(lambda: [line for line in w.log().splitlines() if "refused" in line], 10)
    assert len(refused) == 2 and all("not in prom_allowed_hosts" in line for line in refused), refused
