"""The selenium backend: a Chrome through Selenium (optional dependency), headless for backend="selenium"
or a visible window for the captcha hand-over, that can reach the allowed hosts only."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tasks.prom.captcha import wait_for_person
from tasks.prom.fetch import (
    BROWSER_HEADERS,
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_TIMEOUT,
    FetchError,
    Refused,
    _describe,
    check_url,
    normalize_hosts,
)

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
    is left on screen for a person to solve, polled until it is gone or the time is up
    (captcha.wait_for_person).
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
            html = self._look()
            html = wait_for_person(url, html, self._look, self.captcha_wait)
        except FetchError:
            raise
        except Exception as exc:  # noqa: BLE001 - WebDriverException, TimeoutException, ...
            if "ERR_NAME_NOT_RESOLVED" in str(exc):
                raise FetchError("Chrome could not resolve a host on the way (every host off prom_allowed_hosts "
                                 "is unresolvable for it, e.g. a redirect's target)") from exc
            raise FetchError(_describe(exc)) from exc
        return 200, html

    def _look(self) -> str:
        """The page shown now, once it is known to be on an allowed host."""
        self._check_landing()
        return self.driver.page_source

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
