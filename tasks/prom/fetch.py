"""The fetch step's contract, shared by both backends: the Fetcher protocol, its errors, and which hosts may be fetched.

Only the hosts of the worker's prom_allowed_hosts setting (and their subdomains) are fetched:
check_url is the one check, applied by the requests backend to every redirect hop and by the
selenium backend before and after Chrome loads a page.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from tasks.prom import log as _log

DEFAULT_TIMEOUT = 20.0  # seconds per request (connect, each read, and the whole body)
# Hosts prom_pars may fetch from, with their subdomains, when the worker's prom_allowed_hosts
# setting is not at hand (the function called outside a worker). Not a task param on purpose:
# whoever answers get_task must not choose which hosts of the PC's network get fetched.
DEFAULT_ALLOWED_HOSTS = ("prom.ua",)

BROWSER_HEADERS = {
    "User-Agent": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                   "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Accept-Language": "uk-UA,uk;q=0.9,ru;q=0.8,en-US;q=0.7,en;q=0.6",
    "Accept-Encoding": "gzip, deflate",
    "Upgrade-Insecure-Requests": "1",
}


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



def _describe(exc: BaseException) -> str:
    """One printable line: error texts may quote what a server sent (a URL, a header)."""
    text = " ".join(str(exc).split())[:200]
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__



def _close(fetcher: Any) -> None:
    close = getattr(fetcher, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - closing must not turn a result into a failure
            _log.debug("closing the fetcher failed", exc_info=True)
