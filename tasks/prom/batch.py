"""The batch: the products in the order given, one result row each; one product's trouble (404, timeout,
5xx, a refused host, a malformed field) becomes its row's status and nulls, only a captcha stops the batch
(the per-product error policy of docs/prom_pars.md)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tasks.prom import log as _log
from tasks.prom.captcha import CaptchaStop, HandOver
from tasks.prom.fetch import Fetcher, FetchError, Refused, _clip
from tasks.prom.parse import NOT_AVAILABLE, UNKNOWN, Page, parse_product_page


def _row(product_id: Any, status_id: int, price: float | None = None, order_quantity: int | None = None,
         rating: float | None = None) -> dict[str, Any]:
    return {"product_id": product_id, "status_id": status_id, "price": price,
            "order_quantity": order_quantity, "rating": rating}


def scrape(products: list[tuple[Any, Any]], fetcher: Fetcher, *, delay: float = 0.0,
           captcha_fallback: Callable[[], Fetcher] | None = None,
           sleep: Callable[[float], None] = time.sleep, log: logging.Logger = _log) -> list[dict[str, Any]]:
    """Fetch and parse each (product_id, url) in order; raises CaptchaStop on a captcha.

    ``captcha_fallback`` builds the fetcher that takes over, for the captcha page and
    every product after it, the first time a captcha is met (a visible browser).
    The caller closes ``fetcher``; a fallback fetcher is closed here.
    """
    results = []
    hand_over = HandOver(fetcher, captcha_fallback, log)
    try:
        for index, (product_id, url) in enumerate(products):
            if index and delay > 0:
                sleep(delay)
            where = f"{url} (product {product_id!r}, {index + 1} of {len(products)})"
            while True:
                try:
                    row = _one(product_id, url, hand_over.current, log)
                    break
                except CaptchaStop:
                    hand_over.take_over(where)  # the same product again, in the fallback browser, or CaptchaStop
            results.append(row)
    finally:
        hand_over.close()
    return results


def _one(product_id: Any, url: Any, fetcher: Fetcher, log: logging.Logger) -> dict[str, Any]:
    if not isinstance(url, str):
        log.warning("product %r: url is not a string: %r", product_id, _clip(repr(url)))
        return _row(product_id, UNKNOWN)
    shown = _clip(url, 300).encode("unicode_escape").decode("ascii")  # server text: one printable line
    try:
        status, html = fetcher(url)
    except Refused as exc:
        log.warning("product %r: refused %s: %s (status 5, nothing fetched from there)", product_id, shown, exc)
        return _row(product_id, UNKNOWN)
    except FetchError as exc:
        log.warning("product %r: %s: %s", product_id, shown, exc)
        return _row(product_id, UNKNOWN)
    try:
        page = parse_product_page(html) if html else Page()
    except Exception:  # noqa: BLE001 - one odd page must not fail the batch
        log.exception("product %r: cannot parse %s", product_id, shown)
        return _row(product_id, UNKNOWN)
    if page.captcha:
        raise CaptchaStop
    if status in (404, 410):
        # Read like any page (1.0.9's browser saw the not-found page, not the status); a 404
        # page without any marker still means the product is gone.
        if page.status_id == UNKNOWN:
            page.status_id = NOT_AVAILABLE
    elif not 200 <= status < 300:
        log.warning("product %r: %s answered HTTP %d", product_id, shown, status)
        return _row(product_id, UNKNOWN)
    if page.problems:
        log.warning("product %r: malformed %s on %s (set to null)", product_id, " and ".join(page.problems), shown)
    return _row(product_id, page.status_id, page.price, page.order_quantity, page.rating)
