"""Download a release zip into the home: streamed to a .part file, capped, hashed while it streams.

The file gets its final name only when it is complete and matches the expected size and
SHA-256 (when given); anything else removes the .part and refuses the update.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
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
    cap = max_bytes if expected_size is None else min(max_bytes, expected_size)
    if expected_size is not None and expected_size > max_bytes:
        raise UpdateRefused(f"the release is {expected_size} bytes, over UPDATE_MAX_BYTES={max_bytes}")
    started = time.monotonic()
    digest = hashlib.sha256()
    size = 0
    try:
        with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, read_timeout),
                          headers={"User-Agent": user_agent, "Accept-Encoding": "identity"}) as resp:
            if resp.status_code != 200:
                raise UpdateRefused(f"download: HTTP {resp.status_code} from {redact_url(url)}")
            announced = _content_length(resp)
            if announced is not None and announced > cap:
                raise UpdateRefused(_too_big(announced, max_bytes, expected_size))
            if announced is not None and expected_size is not None and announced != expected_size:
                raise UpdateRefused(f"download: the server announces {announced} bytes, params.size is {expected_size}")
            with _private_open(part) as f:
                # read1: one receive per call (iter_content would wait for a whole CHUNK), so the
                # clock is checked after every arrival and a trickle cannot outlast the deadline.
                while chunk := resp.raw.read1(CHUNK, decode_content=True):
                    size += len(chunk)
                    if size > cap:
                        raise UpdateRefused(_too_big(size, max_bytes, expected_size, "at least "))
                    digest.update(chunk)
                    f.write(chunk)
                    if time.monotonic() - started > total_timeout:
                        raise UpdateRefused(f"download: not complete after {total_timeout:.0f} s ({size} bytes so far)")
                f.flush()
                os.fsync(f.fileno())
            if announced is not None and size != announced:
                raise UpdateRefused(f"download: truncated: {size} of {announced} bytes")
    except UpdateRefused:
        part.unlink(missing_ok=True)
        raise
    except (requests.Timeout, urllib3.exceptions.TimeoutError):
        part.unlink(missing_ok=True)
        raise UpdateRefused(f"download: no data for {read_timeout:g} s ({size} bytes so far)") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        part.unlink(missing_ok=True)
        text = redact_url(" ".join(str(exc).split()))[:200]  # masked before the cut, which could end in a password
        raise UpdateRefused(f"download failed after {size} bytes (truncated or unreachable): {type(exc).__name__}: {text}") \
            from None
    sha = digest.hexdigest()
    problem = None
    if expected_size is not None and size != expected_size:
        problem = f"download: got {size} bytes, params.size is {expected_size} (truncated or wrong file)"
    elif expected_sha256 is not None and sha != expected_sha256:
        problem = f"download: SHA-256 is {sha}, params.sha256 is {expected_sha256}"
    if problem:
        part.unlink(missing_ok=True)
        raise UpdateRefused(problem)
    os.replace(part, dest)
    log.info("update: downloaded %d bytes in %.1f s, sha256 %s", size, time.monotonic() - started, sha)
    return sha, size


def _private_open(path: Path) -> BinaryIO:
    """A new file only this account can read and write (POSIX 0600 whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    if os.name != "nt":
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
