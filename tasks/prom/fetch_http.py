"""The requests backend (the default fetcher): one Session per task, retries with backoff, redirects
followed hop by hop on the allowed hosts only, one cookie jar per host."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from tasks.prom import log as _log
from tasks.prom.fetch import (
    BROWSER_HEADERS,
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_TIMEOUT,
    FetchError,
    _describe,
    check_url,
    normalize_hosts,
)

DEFAULT_RETRIES = 2  # extra attempts after a 5xx/429/connection error/timeout
DEFAULT_BACKOFF = 1.0  # first pause before a retry; doubles each time (capped at MAX_BACKOFF)
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0  # longest Retry-After a 429/503 may impose
MAX_PAGE_BYTES = 10 * 1024 * 1024  # a larger body is not a product page
MAX_REDIRECTS = 10  # hops followed for one product, each checked against the allowed hosts
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


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
