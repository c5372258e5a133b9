"""prom_pars: the fleet's prom.ua product page scraper (docs/prom_pars.md); the task's entry, what config.py imports.

    prom_pars(products_to_scrape=[{"product_id": 1, "url": "https://prom.ua/ua/p1-....html"}, ...])
    -> {"status": "success", "data": [{"product_id": 1, "status_id": 1, "price": 1299.5,
                                       "order_quantity": 15, "rating": 4.8}, ...]}
    -> {"status": "failure", "message": "captcha on https://... (product 7, 3 of 10): ..."}

Pages are fetched with requests (one Session per task, browser-like headers,
retries with backoff on 5xx, 429 and connection errors, a polite delay between
products) and parsed with selectolax (Lexbor). The fetch step is any callable
``url -> (http_status, html)`` (the ``Fetcher`` protocol), so a Selenium backend
(``backend="selenium"``, optional dependency) can take over.

Each entry is computed exactly as 1.0.9 did (shared/hive-protocol-v1.md, "How 1.0.9
computes each entry"; the few deliberate differences: docs/prom_pars.md, "1.0.9 vs now").
Only the hosts of the worker's prom_allowed_hosts setting (default prom.ua and its
subdomains) are fetched, every redirect hop checked, cookies kept per host.

One product's trouble (404, timeout, 5xx, a malformed price, a refused host) never fails
the batch: it gets a status and null fields. Only a captcha page stops the batch.

This module reads the task's params and options, picks the fetcher and shapes the result;
the parts are in tasks/prom/ (parse.py, fetch.py, fetch_http.py, fetch_browser.py,
captcha.py, batch.py: tasks/prom/__init__.py says which does what).

Module import stays cheap: requests, selectolax and selenium are imported when
a task runs, not when the registry is loaded.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from typing import Any

from tasks.prom import log as _log
from tasks.prom.batch import scrape
from tasks.prom.captcha import CAPTCHA_WAIT, CaptchaStop
from tasks.prom.fetch import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_TIMEOUT,
    Fetcher,
    FetchError,
    _close,
    normalize_hosts,
)
from tasks.prom.fetch_browser import SeleniumFetcher
from tasks.prom.fetch_http import DEFAULT_BACKOFF, DEFAULT_RETRIES, RequestsFetcher

DEFAULT_DELAY = 1.0  # seconds between two products of one task
MAX_RETRIES = 10  # the retries option is clamped to 0..MAX_RETRIES


def make_fetcher(backend: str = "requests", *, timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF, headers: dict[str, str] | None = None,
                 allowed_hosts: Iterable[str] = DEFAULT_ALLOWED_HOSTS) -> Fetcher:
    """The fetcher of the task's ``backend`` option (the captcha fallback is built in prom_pars)."""
    if backend == "requests":
        return RequestsFetcher(timeout=timeout, retries=retries, backoff=backoff, headers=headers,
                               allowed_hosts=allowed_hosts)
    if backend == "selenium":
        return SeleniumFetcher(timeout=timeout, headless=True, headers=headers, allowed_hosts=allowed_hosts)
    raise ValueError(f"unknown backend {backend!r} (use 'requests' or 'selenium')")


def prom_pars(products_to_scrape: Any = None, *, delay: float = DEFAULT_DELAY, timeout: float = DEFAULT_TIMEOUT,
              retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF, backend: str = "requests",
              captcha_fallback: bool = False, captcha_wait: float = CAPTCHA_WAIT,
              headers: dict[str, str] | None = None, **unknown: Any) -> dict[str, Any]:
    """The prom_pars task: one result row per product, in the order given (docs/prom_pars.md).

    Options (all optional, JSON values): delay (s between products), timeout (s per request),
    retries (extra attempts on 5xx/429/connection errors/timeouts), backoff (first retry pause, s,
    doubling), backend ("requests" or "selenium"), captcha_fallback (on a captcha, hand over to a
    visible Chrome for a person to solve it, waiting up to captcha_wait s), headers (extra HTTP headers).
    """
    log = _task_logger()
    if unknown:
        log.warning("prom_pars: ignoring unknown params %s", ", ".join(sorted(unknown)))
    if products_to_scrape is None:
        return _failure("products_to_scrape is missing")
    if not isinstance(products_to_scrape, list):
        return _failure(f"products_to_scrape must be a list, got {type(products_to_scrape).__name__}")
    try:
        delay, timeout, retries, backoff, captcha_wait = _checked_options(delay, timeout, retries, backoff,
                                                                          captcha_wait, headers)
    except (TypeError, ValueError) as exc:
        return _failure(f"bad option: {exc}")

    wanted = _wanted(products_to_scrape, log)
    if not wanted:
        return {"status": "success", "data": []}
    allowed = allowed_hosts()
    try:
        fetcher = make_fetcher(backend, timeout=timeout, retries=retries, backoff=backoff, headers=headers,
                               allowed_hosts=allowed)
    except (FetchError, ValueError, ImportError) as exc:
        return _failure(str(exc))

    fallback = None
    if captcha_fallback:
        fallback = functools.partial(SeleniumFetcher, timeout=timeout, headless=False, captcha_wait=captcha_wait,
                                     headers=headers, allowed_hosts=allowed)

    started = time.monotonic()
    try:
        rows = scrape(wanted, fetcher, delay=delay, captcha_fallback=fallback, log=log)
    except CaptchaStop as exc:
        return _failure(f"{exc}; stopped the batch, no results sent")
    finally:
        _close(fetcher)
    counts: dict[int, int] = {}
    for row in rows:
        counts[row["status_id"]] = counts.get(row["status_id"], 0) + 1
    log.info("prom_pars: %d products in %.1f s, by status_id %s", len(rows), time.monotonic() - started,
             dict(sorted(counts.items())))
    return {"status": "success", "data": rows}


def _checked_options(delay: Any, timeout: Any, retries: Any, backoff: Any, captcha_wait: Any,
                     headers: Any) -> tuple[float, float, int, float, float]:
    """(delay, timeout, retries, backoff, captcha_wait) as used: numbers, clamped where a range
    is documented; raises TypeError or ValueError (the task fails with "bad option: ...")."""
    delay, timeout, backoff = max(0.0, float(delay)), float(timeout), max(0.0, float(backoff))
    retries, captcha_wait = min(max(0, int(retries)), MAX_RETRIES), max(0.0, float(captcha_wait))
    if not timeout > 0:
        raise ValueError("timeout must be positive")
    if headers is not None and not (isinstance(headers, dict)
                                    and all(isinstance(v, str) for v in headers.values())):
        raise ValueError("headers must be an object of strings")
    if headers and any(str(k).lower() == "cookie" for k in headers):
        raise ValueError("headers must not set Cookie (cookies stay with the host that set them)")
    return delay, timeout, retries, backoff, captcha_wait


def _wanted(products: Iterable[Any], log: logging.Logger) -> list[tuple[Any, Any]]:
    """(product_id, url) of the entries to scrape; entries lacking either are skipped."""
    out = []
    for index, item in enumerate(products):
        if not isinstance(item, dict):
            log.warning("skipping entry %d: not an object", index)
            continue
        product_id, url = item.get("product_id"), item.get("url")
        if product_id is None or product_id == "" or not url:
            log.warning("skipping entry %d: no product_id or url", index)
            continue
        out.append((product_id, url))
    return out


def _failure(message: str) -> dict[str, str]:
    return {"status": "failure", "message": " ".join(message.split())}


def allowed_hosts() -> tuple[str, ...]:
    """The worker's prom_allowed_hosts setting; DEFAULT_ALLOWED_HOSTS outside a worker."""
    try:
        from executor import api
    except ImportError:  # the module used outside the worker
        return DEFAULT_ALLOWED_HOSTS
    hosts = api.settings().get("prom_allowed_hosts")
    return normalize_hosts(hosts) if hosts is not None else DEFAULT_ALLOWED_HOSTS


def _task_logger() -> logging.Logger:
    try:
        from executor import api
    except ImportError:  # the module used outside the worker
        return _log
    return api.get_logger()


def time_limit(n_products: int, delay: float = DEFAULT_DELAY, base: float = 120.0, per_fetch: float = 4.0) -> float:
    """Suggested wall-clock limit (s) for a prom_pars task of n products (docs/prom_pars.md)."""
    return base + n_products * (delay + per_fetch)
