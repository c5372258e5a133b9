"""Download a release zip into the home: streamed to a .part file, capped, hashed while it streams.

The file gets its final name only when it is complete and matches the expected size and
SHA-256 (when given); anything else removes the .part and refuses the update.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import requests
import urllib3

from common.safetext import redact_url
from supervisor.update.errors import UpdateRefused

log = logging.getLogger("hive.update")

CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0  # no byte for this long: give up
TOTAL_TIMEOUT = 1800.0  # a trickling server does not hold the worker forever
CHUNK = 256 * 1024  # at most this much per read; a read returns whatever one receive brought


def download(url: str, dest: Path, max_bytes: int, expected_size: int | None = None,
             expected_sha256: str | None = None, user_agent: str = "hive-worker",
             read_timeout: float = READ_TIMEOUT, total_timeout: float = TOTAL_TIMEOUT) -> tuple[str, int]:
    """Fetch url to dest; returns (sha256 hex, size). Raises UpdateRefused."""
    part = dest.with_name(dest.name + ".part")
    for stale in (part, dest):
        stale.unlink(missing_ok=True)
    if expected_size is not None and expected_size > max_bytes:
        raise UpdateRefused(f"the release is {expected_size} bytes, over UPDATE_MAX_BYTES={max_bytes}")
    fetch = _Fetch(url, part, max_bytes, expected_size, read_timeout, total_timeout)
    try:
        fetch.run(user_agent)
        sha = fetch.check_whole(expected_sha256)
    except UpdateRefused:
        part.unlink(missing_ok=True)
        raise
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise fetch.failed(exc) from None
    os.replace(part, dest)
    log.info("update: downloaded %d bytes in %.1f s, sha256 %s", fetch.size, time.monotonic() - fetch.started, sha)
    return sha, fetch.size


@dataclass
class _Fetch:
    """One download into ``part``: its limits and what has arrived so far. download() runs the
    steps: run (answer, announced length, the body), check_whole; failed() words any error."""

    url: str
    part: Path
    max_bytes: int
    expected_size: int | None
    read_timeout: float
    total_timeout: float
    started: float = field(default_factory=time.monotonic)
    size: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def cap(self) -> int:
        return self.max_bytes if self.expected_size is None else min(self.max_bytes, self.expected_size)

    def run(self, user_agent: str) -> None:
        with requests.get(self.url, stream=True, timeout=(CONNECT_TIMEOUT, self.read_timeout),
                          headers={"User-Agent": user_agent, "Accept-Encoding": "identity"}) as resp:
            if resp.status_code != 200:
                raise UpdateRefused(f"download: HTTP {resp.status_code} from {redact_url(self.url)}")
            announced = self.check_announced(resp)
            self.receive(resp)
            if announced is not None and self.size != announced:
                raise UpdateRefused(f"download: truncated: {self.size} of {announced} bytes")

    def check_announced(self, resp: requests.Response) -> int | None:
        """The Content-Length, if any, refused when it is over the cap or is not params.size."""
        announced = _content_length(resp)
        if announced is not None and announced > self.cap:
            raise UpdateRefused(_too_big(announced, self.max_bytes, self.expected_size))
        if announced is not None and self.expected_size is not None and announced != self.expected_size:
            raise UpdateRefused(f"download: the server announces {announced} bytes, params.size is "
                                f"{self.expected_size}")
        return announced

    def receive(self, resp: requests.Response) -> None:
        """The body into ``part``, hashed as it comes, cut at the cap and at the total deadline."""
        with _private_open(self.part) as f:
            # read1: one receive per call (iter_content would wait for a whole CHUNK), so the
            # clock is checked after every arrival and a trickle cannot outlast the deadline.
            while chunk := resp.raw.read1(CHUNK, decode_content=True):
                self.size += len(chunk)
                if self.size > self.cap:
                    raise UpdateRefused(_too_big(self.size, self.max_bytes, self.expected_size, "at least "))
                self.digest.update(chunk)
                f.write(chunk)
                if time.monotonic() - self.started > self.total_timeout:
                    raise UpdateRefused(f"download: not complete after {self.total_timeout:.0f} s "
                                        f"({self.size} bytes so far)")
            f.flush()
            os.fsync(f.fileno())

    def check_whole(self, expected_sha256: str | None) -> str:
        """The SHA-256 of what arrived, once it is params.size bytes and has params.sha256 (when given)."""
        sha = self.digest.hexdigest()
        if self.expected_size is not None and self.size != self.expected_size:
            raise UpdateRefused(f"download: got {self.size} bytes, params.size is {self.expected_size} "
                                "(truncated or wrong file)")
        if expected_sha256 is not None and sha != expected_sha256:
            raise UpdateRefused(f"download: SHA-256 is {sha}, params.sha256 is {expected_sha256}")
        return sha

    def failed(self, exc: Exception) -> UpdateRefused:
        """The refusal for a transport or file error (a read timeout is worded apart)."""
        if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
            return UpdateRefused(f"download: no data for {self.read_timeout:g} s ({self.size} bytes so far)")
        text = redact_url(" ".join(str(exc).split()))[:200]  # masked before the cut, which could end in a password
        return UpdateRefused(f"download failed after {self.size} bytes (truncated or unreachable): "
                             f"{type(exc).__name__}: {text}")


def _private_open(path: Path) -> BinaryIO:
    """A new file only this account can read and write (POSIX 0600 whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    if sys.platform != "win32":
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length")
    if value is None or resp.headers.get("Content-Encoding", "identity") not in ("", "identity"):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _too_big(size: int, max_bytes: int, expected: int | None, prefix: str = "") -> str:
    if expected is not None and size > expected and expected <= max_bytes:
        return f"download: {prefix}{size} bytes, more than params.size={expected}"
    return f"download: {prefix}{size} bytes, over UPDATE_MAX_BYTES={max_bytes}"
