"""prom_pars: the fleet's prom.ua product page scraper (docs/prom_pars.md).

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

Module import stays cheap: requests, selectolax and selenium are imported when
a task runs, not when the registry is loaded.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from selectolax.lexbor import LexborNode

# status_id values, as the deployed server knows them
NOT_AVAILABLE = 0  # also: a page-not-found page, HTTP 404/410
IN_STOCK = 1
READY_TO_SHIP = 2
MADE_TO_ORDER = 3
DELETED = 4  # the page shows a warning panel
UNKNOWN = 5  # unknown status text, or the page could not be had (timeout, 5xx, ...)

# product_presence texts (Ukrainian and Russian) in the protocol's order, compared as lower-cased
# words; the first of them contained in a text gives its status (presence_status).
PRESENCE_TEXTS: dict[str, int] = {
    "недоступний": NOT_AVAILABLE,
    "недоступен": NOT_AVAILABLE,
    "в наявності": IN_STOCK,
    "в наличии": IN_STOCK,
    "готово до відправки": READY_TO_SHIP,
    "готово к отправке": READY_TO_SHIP,
    "під замовлення": MADE_TO_ORDER,
    "под заказ": MADE_TO_ORDER,
}

# order_quantity of a page without an order_counter (the site shows none before a first sale).
NO_COUNTER_QUANTITY: int | None = None

DEFAULT_DELAY = 1.0  # seconds between two products of one task
DEFAULT_TIMEOUT = 20.0  # seconds per request (connect, each read, and the whole body)
DEFAULT_RETRIES = 2  # extra attempts after a 5xx/429/connection error/timeout
MAX_RETRIES = 10
DEFAULT_BACKOFF = 1.0  # first pause before a retry; doubles each time (capped at MAX_BACKOFF)
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0  # longest Retry-After a 429/503 may impose
MAX_PAGE_BYTES = 10 * 1024 * 1024  # a larger body is not a product page
CAPTCHA_WAIT = 300.0  # seconds a person gets to solve a captcha in the fallback browser
MAX_REDIRECTS = 10  # hops followed for one product, each checked against the allowed hosts
# Hosts prom_pars may fetch from, with their subdomains, when the worker's prom_allowed_hosts
# setting is not at hand (the function called outside a worker). Not a task param on purpose:
# whoever answers get_task must not choose which hosts of the PC's network get fetched.
DEFAULT_ALLOWED_HOSTS = ("prom.ua",)
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

BROWSER_HEADERS = {
    "User-Agent": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                   "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Accept-Language": "uk-UA,uk;q=0.9,ru;q=0.8,en-US;q=0.7,en;q=0.6",
    "Accept-Encoding": "gzip, deflate",
    "Upgrade-Insecure-Requests": "1",
}

# CSS selectors of the page's markers
SEL_MAIN = '[data-qaid="main_product_info"]'
SEL_PRICE = '[data-qaid="product_price"]'
SEL_PRESENCE = '[data-qaid="product_presence"]'
SEL_COUNTER = '[data-qaid="order_counter"]'
SEL_RATING = '[data-qaid="product_rating"]'
SEL_NOT_FOUND = '[data-qaid="page_not_found_title"]'
SEL_WARNING = '[data-qaid="warning_panel"]'
SEL_CAPTCHA = "div.g-recaptcha"

# Over text already taken out of the page (never over HTML): words, and a count such as
# "15", "1 234" (space, no-break or thin space as thousands separator) in "Продано 1 234 шт."
_WORD = re.compile(r"\w+")
_COUNT = re.compile(r"\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)|\d+")
_SPACES = str.maketrans("", "", " \u00a0\u202f\t\r\n")

_log = logging.getLogger("task.prom_pars")


# ---------------------------------------------------------------------------------------------
# Fetching


class FetchError(Exception):
    """The page could not be had (after the fetcher's own retries): the product gets status 5."""


class Refused(FetchError):
    """The URL (or a redirect hop) leads off the allowed hosts: nothing was sent there."""


def normalize_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    """Allowed-host entries as compared: lower case, no trailing dot, no leading "*." or ".";
    an entry allows that host and all its subdomains."""
    out = []
    for host in hosts:
        host = host.strip().lower().rstrip(".")
        while host.startswith(("*.", ".")):
            host = host[1:] if host.startswith(".") else host[2:]
        if host:
            out.append(host)
    return tuple(dict.fromkeys(out))


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """True if ``host`` (already parsed out of a URL) is an allowed host or a subdomain of one."""
    if not host:
        return False
    host = host.lower().rstrip(".").strip("[]")
    return any(host == entry or host.endswith("." + entry) for entry in allowed)


def check_url(url: str, allowed: tuple[str, ...]) -> str:
    """Return the URL's host if it is http(s) on an allowed host, else raise Refused.

    Parsed with urllib3's parser, the one requests connects with, so the host checked is the
    host connected to (no disagreement between two URL parsers to slip through)."""
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    try:
        parts = parse_url(url)
    except (LocationParseError, ValueError) as exc:
        raise Refused(f"not a URL: {_describe(exc)}") from None
    if (parts.scheme or "").lower() not in ("http", "https"):
        raise Refused(f"scheme {parts.scheme!r} is not http(s)")
    if not host_allowed(parts.host, allowed):
        raise Refused(f"host {_clip(parts.host)!r} is not in prom_allowed_hosts")
    return (parts.host or "").lower().rstrip(".")


def _clip(text: str | None, limit: int = 100) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + "..."


class Fetcher(Protocol):
    """The replaceable fetch step: ``fetcher(url) -> (http_status, html)``.

    ``html`` is str, or bytes in UTF-8. Raises FetchError when there is no answer at all. A fetcher may have ``close()``.
    A browser backend without access to the status code answers 200.
    """

    def __call__(self, url: str) -> tuple[int, str | bytes]: ...


def _charset(content_type: str | None) -> str:
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return "utf-8"  # prom.ua serves UTF-8; never fall back to requests' slow guessing


def _html(body: bytes, content_type: str | None) -> str | bytes:
    """UTF-8 bodies stay bytes (the parser reads UTF-8 bytes directly: decoding a 400 KB page
    to str and the parser encoding it back costs more than parsing it); others become str."""
    charset = _charset(content_type)
    if charset.lower().replace("-", "").replace("_", "") in ("utf8", "ascii", "usascii"):
        return body
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body


def _describe(exc: BaseException) -> str:
    """One printable line: error texts may quote what a server sent (a URL, a header)."""
    text = " ".join(str(exc).split())[:200]
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Deadline(Exception):
    pass


class RequestsFetcher:
    """requests-based fetcher: one Session, retries with exponential backoff.

    Retried: connection errors (refused, reset), timeouts, HTTP 5xx and 429 (honouring
    a numeric Retry-After up to MAX_RETRY_AFTER). After the last attempt a 5xx/429
    answer is returned as is; a transport error raises FetchError. ``timeout`` bounds
    the connection, each read, and the whole exchange of one attempt, redirects included
    (the body deadline is checked between 64 KB chunks).

    Only ``allowed_hosts`` (and their subdomains) are contacted: redirects are followed here,
    hop by hop, each checked before it is requested (Refused otherwise). Cookies are kept in
    one jar per host, so what one host set is never sent to another.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF, headers: dict[str, str] | None = None,
                 max_bytes: int = MAX_PAGE_BYTES, sleep: Callable[[float], None] = time.sleep,
                 allowed_hosts: Iterable[str] = DEFAULT_ALLOWED_HOSTS) -> None:
        import requests

        self._requests = requests
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_bytes = max_bytes
        self.sleep = sleep
        self.allowed_hosts = normalize_hosts(allowed_hosts)
        self.session = requests.Session()
        self.session.headers.update(BROWSER_HEADERS)
        if headers:
            self.session.headers.update(headers)
        self._jars: dict[str, Any] = {}

    def _jar(self, host: str) -> Any:
        jar = self._jars.get(host)
        if jar is None:
            jar = self._jars[host] = self._requests.cookies.RequestsCookieJar()
        return jar

    def _get(self, url: str) -> tuple[int, str | bytes, str | None]:
        from urllib.parse import urljoin

        deadline = time.monotonic() + self.timeout
        for _hop in range(MAX_REDIRECTS + 1):
            host = check_url(url, self.allowed_hosts)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline(f"no answer within {self.timeout:g} s")
            # The session reads and stores cookies in .cookies: point it at this host's jar.
            self.session.cookies = self._jar(host)
            with self.session.get(url, timeout=remaining, stream=True, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status_code in REDIRECT_CODES and location:
                    url = urljoin(url, location)
                    continue
                return resp.status_code, self._body(resp, deadline), resp.headers.get("Retry-After")
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")

    def _body(self, resp: Any, deadline: float) -> str | bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_content(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchError(f"page larger than {self.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise _Deadline(f"body not read within {self.timeout:g} s")
        return _html(b"".join(chunks), resp.headers.get("Content-Type"))

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        wait = min(self.backoff * (2 ** attempt), MAX_BACKOFF)
        if retry_after:
            try:
                wait = max(wait, min(float(retry_after), MAX_RETRY_AFTER))
            except ValueError:
                pass  # an HTTP date: keep our own backoff
        if wait > 0:
            self.sleep(wait)

    def __call__(self, url: str) -> tuple[int, str | bytes]:
        req = self._requests
        retryable = (req.ConnectionError, req.Timeout, req.exceptions.ChunkedEncodingError,
                     req.exceptions.ContentDecodingError, _Deadline)
        attempts = max(0, int(self.retries)) + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                status, html, retry_after = self._get(url)
            except retryable as exc:
                if last:
                    raise FetchError(_describe(exc)) from exc
                _log.debug("retrying %s after %s", url, _describe(exc))
                self._pause(attempt, None)
                continue
            except req.RequestException as exc:  # bad URL, too many redirects, ...: retrying won't help
                raise FetchError(_describe(exc)) from exc
            if (status >= 500 or status == 429) and not last:
                _log.debug("retrying %s after HTTP %d", url, status)
                self._pause(attempt, retry_after)
                continue
            return status, html
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.session.close()


# Chrome switches for an unattended fetcher: no background traffic of its own (updates,
# sync, field trials), no first-run UI; --no-sandbox only as root (Chrome refuses otherwise).
CHROME_SWITCHES = ("--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--lang=uk-UA")
# Where a PC's Chrome or Debian's chromium and their chromedriver are; else Selenium Manager looks.
CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
CHROMEDRIVER_NAMES = ("chromedriver",)


def _which(names: Iterable[str]) -> str | None:
    import shutil

    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def resolver_rules(allowed: tuple[str, ...]) -> str:
    """Chrome --host-resolver-rules that leave only the allowed hosts (and subdomains) resolvable:
    every request Chrome makes (redirect hops, scripts, frames) to another host fails to resolve."""
    excludes = [f"EXCLUDE {host}, EXCLUDE *.{host}" for host in allowed]
    return ", ".join(["MAP * ~NOTFOUND", *excludes])


class SeleniumFetcher:
    """Chrome through Selenium (optional dependency, imported only here).

    ``headless=False`` opens a visible window; with ``captcha_wait`` > 0 a captcha page
    is left on screen for a person to solve, polled until it is gone or the time is up.
    Only this fetcher's own browser is closed (driver.quit()), never other Chrome processes.
    Off-list hosts: the URL is checked before Chrome is sent there, Chrome cannot resolve any
    other host (resolver_rules), and the page it ended on is checked again.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, headless: bool = True, captcha_wait: float = 0.0,
                 headers: dict[str, str] | None = None,
                 allowed_hosts: Iterable[str] = DEFAULT_ALLOWED_HOSTS) -> None:
        try:
            # By module, not through selenium.webdriver's lazy names: a frozen build's import
            # analysis follows these (release/hooks/hook-selenium.py).
            from selenium.webdriver.chrome.options import Options
            from selenium.webdriver.chrome.service import Service
            from selenium.webdriver.chrome.webdriver import WebDriver
        except ImportError as exc:
            raise FetchError(f"the selenium backend needs the selenium package, which is not installed "
                             f"({_describe(exc)})") from exc
        self.allowed_hosts = normalize_hosts(allowed_hosts)
        options = Options()
        if headless:
            options.add_argument("--headless=new")
        user_agent = (headers or {}).get("User-Agent", BROWSER_HEADERS["User-Agent"])
        options.add_argument(f"--user-agent={user_agent}")
        for switch in CHROME_SWITCHES:
            options.add_argument(switch)
        options.add_argument(f"--host-resolver-rules={resolver_rules(self.allowed_hosts)}")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            options.add_argument("--no-sandbox")
        if sys.platform.startswith("linux"):
            options.add_argument("--disable-dev-shm-usage")  # containers give /dev/shm 64 MB: a renderer would crash
        # Selenium Manager (it finds or downloads a chromedriver when none is on PATH) would
        # otherwise report usage statistics to the network from every fleet PC.
        os.environ.setdefault("SE_AVOID_STATS", "true")
        binary, driver = _which(CHROME_NAMES), _which(CHROMEDRIVER_NAMES)
        if binary and os.name != "nt":  # on Windows Selenium finds the installed Chrome itself
            options.binary_location = binary
        try:
            self.driver = WebDriver(options=options, service=Service(executable_path=driver))
        except Exception as exc:  # noqa: BLE001 - selenium raises many types when Chrome is missing
            raise FetchError(f"cannot start Chrome for the selenium backend: {_describe(exc)}") from exc
        self.driver.set_page_load_timeout(timeout)
        self.captcha_wait = captcha_wait

    def __call__(self, url: str) -> tuple[int, str]:
        check_url(url, self.allowed_hosts)
        try:
            self.driver.get(url)
            self._check_landing()
            html = self.driver.page_source
            if self.captcha_wait > 0 and is_captcha(html):
                _log.warning("captcha on %s: waiting up to %g s for a person to solve it", url, self.captcha_wait)
                end = time.monotonic() + self.captcha_wait
                while is_captcha(html) and time.monotonic() < end:
                    time.sleep(0.5)
                    self._check_landing()
                    html = self.driver.page_source
        except FetchError:
            raise
        except Exception as exc:  # noqa: BLE001 - WebDriverException, TimeoutException, ...
            if "ERR_NAME_NOT_RESOLVED" in str(exc):
                raise FetchError("Chrome could not resolve a host on the way (every host off prom_allowed_hosts "
                                 "is unresolvable for it, e.g. a redirect's target)") from exc
            raise FetchError(_describe(exc)) from exc
        return 200, html

    def _check_landing(self) -> None:
        """The page Chrome shows now must be on an allowed host (a redirect or script moved it)."""
        current = self.driver.current_url
        try:
            check_url(current, self.allowed_hosts)
        except Refused as exc:
            self.driver.get("about:blank")  # leave nothing of that page running
            raise Refused(f"the browser ended on another host: {exc}") from None

    def close(self) -> None:
        import psutil

        try:
            browser = psutil.Process(self.driver.service.process.pid).children(recursive=True)
        except (psutil.Error, AttributeError):
            browser = []
        browser += _crash_handlers()
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        # quit() returns once chromedriver is told to go; Chrome's helpers exit a moment later.
        # Waiting here keeps the executor's leftover sweep for processes that really were left.
        psutil.wait_procs(browser, timeout=10)


def _crash_handlers() -> list[Any]:
    """Chrome's crashpad handlers of this task's tree: they detach from Chrome (parent: init) but
    inherit the executor's tree token, so only this task's own are found; [] outside a worker."""
    import psutil

    try:
        from common.vocabulary import TOKEN_ENV
    except ImportError:
        return []
    token = os.environ.get(TOKEN_ENV)
    found = []
    if token:
        for proc in psutil.process_iter(["name"]):
            try:
                if "crashpad" in (proc.info["name"] or "") and proc.environ().get(TOKEN_ENV) == token:
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
    return found


def make_fetcher(backend: str = "requests", *, timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF, headers: dict[str, str] | None = None,
                 allowed_hosts: Iterable[str] = DEFAULT_ALLOWED_HOSTS) -> Fetcher:
    if backend == "requests":
        return RequestsFetcher(timeout=timeout, retries=retries, backoff=backoff, headers=headers,
                               allowed_hosts=allowed_hosts)
    if backend == "selenium":
        return SeleniumFetcher(timeout=timeout, headless=True, headers=headers, allowed_hosts=allowed_hosts)
    raise ValueError(f"unknown backend {backend!r} (use 'requests' or 'selenium')")


def _close(fetcher: Any) -> None:
    close = getattr(fetcher, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - closing must not turn a result into a failure
            _log.debug("closing the fetcher failed", exc_info=True)


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass
class Page:
    """What one product page says. ``problems`` names the fields that were malformed."""

    captcha: bool = False
    status_id: int = UNKNOWN
    price: float | None = None
    order_quantity: int | None = None
    rating: float | None = None
    problems: tuple[str, ...] = ()


def _text(node: LexborNode) -> str:
    return node.text(deep=True, separator=" ", strip=False) or ""


def presence_status(text: str) -> int:
    """Map a product_presence text to a status_id, as 1.0.9 did: the first status phrase (in the
    protocol's order) contained in the text, compared as lower-cased whole words; UNKNOWN if none.

    One deliberate difference (docs/prom_pars.md, "1.0.9 vs now"): a phrase right after a
    negation ("Немає в наявності", "Нет в наличии") does not count, where 1.0.9 said "in stock".
    """
    words = _WORD.findall(text.casefold().replace("ё", "е"))
    for phrase, status in _PRESENCE_WORDS:
        size = len(phrase)
        for start in range(len(words) - size + 1):
            if words[start:start + size] == phrase and (start == 0 or words[start - 1] not in _NEGATIONS):
                return status
    return UNKNOWN


_PRESENCE_WORDS = [(phrase.split(), status) for phrase, status in PRESENCE_TEXTS.items()]
_NEGATIONS = frozenset({"немає", "нема", "нет", "не"})


def parse_number(value: str | None, low: float = 0.0, high: float = math.inf) -> float | None:
    """'1299.50', ' 1 299,50 ' -> 1299.5. Raises ValueError if present but not a number in [low, high]."""
    if value is None:
        return None
    text = value.translate(_SPACES).replace(",", ".")
    if not text:
        return None
    number = float(text)  # ValueError for anything else
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{value!r} out of range")
    return number


def parse_count(text: str) -> int | None:
    """'Продано 15 шт.' -> 15, '1 234 замовлення' -> 1234, '100+ разів' -> 100; None without digits."""
    match = _COUNT.search(text)
    if match is None:
        return None
    return int(match.group().translate(_SPACES))


def is_captcha(html: str | bytes) -> bool:
    from selectolax.lexbor import LexborHTMLParser

    return LexborHTMLParser(html).css_first(SEL_CAPTCHA) is not None


def parse_product_page(html: str | bytes) -> Page:
    """Read status, price, order count and rating from one product page's HTML, as 1.0.9 did.

    - a ``warning_panel`` anywhere: status 4 and nothing else is read (all fields null);
    - status: the ``product_presence`` text inside ``main_product_info``; without one, 0 if the
      page has ``page_not_found_title``, else 5;
    - price and order count: inside ``main_product_info`` only (the "similar products" cards
      below carry the same markers with other products' values); no block, no values;
    - rating: the first ``product_rating`` anywhere on the page (1.0.9 never scoped it; the
      product's own rating may sit outside the block).
    A malformed price or rating becomes null and is named in ``problems``; the status stays.
    """
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    if tree.css_first(SEL_CAPTCHA) is not None:
        return Page(captcha=True)
    if tree.css_first(SEL_WARNING) is not None:
        return Page(status_id=DELETED)

    block = tree.css_first(SEL_MAIN)
    page = Page(order_quantity=NO_COUNTER_QUANTITY)
    problems = []
    presence = block.css_first(SEL_PRESENCE) if block is not None else None
    if presence is not None:
        page.status_id = presence_status(_text(presence))
    elif tree.css_first(SEL_NOT_FOUND) is not None:
        page.status_id = NOT_AVAILABLE
    if block is not None:
        node = block.css_first(SEL_PRICE)
        if node is not None:
            try:
                page.price = parse_number(node.attributes.get("data-qaprice"))
            except ValueError:
                problems.append("price")
        node = block.css_first(SEL_COUNTER)
        if node is not None:
            page.order_quantity = parse_count(_text(node))
    node = tree.css_first(SEL_RATING)
    if node is not None:
        try:
            page.rating = parse_number(node.attributes.get("data-qarating"), 0.0, 5.0)
        except ValueError:
            problems.append("rating")
    page.problems = tuple(problems)
    return page


# ---------------------------------------------------------------------------------------------
# The batch


class CaptchaStop(Exception):
    """A captcha page: the batch stops (unless the fallback browser gets past it)."""


def _row(product_id: Any, status_id: int, price: float | None = None, order_quantity: int | None = None,
         rating: float | None = None) -> dict[str, Any]:
    return {"product_id": product_id, "status_id": status_id, "price": price,
            "order_quantity": order_quantity, "rating": rating}


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


def scrape(products: list[tuple[Any, Any]], fetcher: Fetcher, *, delay: float = 0.0,
           captcha_fallback: Callable[[], Fetcher] | None = None,
           sleep: Callable[[float], None] = time.sleep, log: logging.Logger = _log) -> list[dict[str, Any]]:
    """Fetch and parse each (product_id, url) in order; raises CaptchaStop on a captcha.

    ``captcha_fallback`` builds the fetcher that takes over, for the captcha page and
    every product after it, the first time a captcha is met (a visible browser).
    The caller closes ``fetcher``; a fallback fetcher is closed here.
    """
    results = []
    current, fallback = fetcher, None
    try:
        for index, (product_id, url) in enumerate(products):
            if index and delay > 0:
                sleep(delay)
            where = f"{url} (product {product_id!r}, {index + 1} of {len(products)})"
            while True:
                try:
                    row = _one(product_id, url, current, log)
                    break
                except CaptchaStop:
                    if captcha_fallback is None or fallback is not None:
                        raise CaptchaStop(f"captcha on {where}") from None
                    log.warning("captcha on %s: handing over to the fallback browser", where)
                    try:
                        fallback = current = captcha_fallback()
                    except FetchError as exc:
                        raise CaptchaStop(f"captcha on {where}; the fallback failed: {exc}") from None
            results.append(row)
    finally:
        if fallback is not None:
            _close(fallback)
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
        delay, timeout, backoff = max(0.0, float(delay)), float(timeout), max(0.0, float(backoff))
        retries, captcha_wait = min(max(0, int(retries)), MAX_RETRIES), max(0.0, float(captcha_wait))
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if headers is not None and not (isinstance(headers, dict)
                                        and all(isinstance(v, str) for v in headers.values())):
            raise ValueError("headers must be an object of strings")
        if headers and any(str(k).lower() == "cookie" for k in headers):
            raise ValueError("headers must not set Cookie (cookies stay with the host that set them)")
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
