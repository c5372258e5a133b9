"""The captcha hand-over: a captcha page stops the batch, unless the task asked for captcha_fallback;
then a visible browser takes over at the captcha and waits for a person at the PC to solve it.

The visible browser itself is fetch_browser.SeleniumFetcher(headless=False, captcha_wait=...);
prom_parser.py builds it, batch.py meets the captcha, this module decides what happens next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tasks.prom import log as _log
from tasks.prom.fetch import Fetcher, FetchError, _close
from tasks.prom.parse import is_captcha

CAPTCHA_WAIT = 300.0  # seconds a person gets to solve a captcha in the fallback browser
POLL = 0.5  # seconds between two looks at the page while a person solves the captcha


class CaptchaStop(Exception):
    """A captcha page: the batch stops (unless the fallback browser gets past it)."""


class HandOver:
    """Which fetcher serves the batch: the task's own until a first captcha, then (with a fallback)
    the visible browser, for the captcha's product and every product after it. One hand-over per
    batch: a captcha in the fallback browser too stops the batch."""

    def __init__(self, fetcher: Fetcher, fallback: Callable[[], Fetcher] | None, log: logging.Logger = _log) -> None:
        self.current = fetcher
        self.make_fallback = fallback
        self.fallback: Fetcher | None = None
        self.log = log

    def take_over(self, where: str) -> None:
        """A captcha at ``where``: switch to the fallback browser, or raise CaptchaStop."""
        if self.make_fallback is None or self.fallback is not None:
            raise CaptchaStop(f"captcha on {where}") from None
        self.log.warning("captcha on %s: handing over to the fallback browser", where)
        try:
            self.fallback = self.current = self.make_fallback()
        except FetchError as exc:
            raise CaptchaStop(f"captcha on {where}; the fallback failed: {exc}") from None

    def close(self) -> None:
        """Close the fallback browser, if one was started (the task's own fetcher is its caller's)."""
        if self.fallback is not None:
            _close(self.fallback)


def wait_for_person(url: str, html: str, look: Callable[[], str], wait: float,
                    sleep: Callable[[float], None] = time.sleep) -> str:
    """A captcha page on screen in the visible browser: look again every POLL s (``look`` reads the
    page shown now) until it is gone or ``wait`` s are up. Returns the last page seen, which is
    still the captcha if nobody solved it. Without a captcha, or with ``wait`` 0, returns ``html``."""
    if not (wait > 0 and is_captcha(html)):
        return html
    _log.warning("captcha on %s: waiting up to %g s for a person to solve it", url, wait)
    end = time.monotonic() + wait
    while is_captcha(html) and time.monotonic() < end:
        sleep(POLL)
        html = look()
    return html
