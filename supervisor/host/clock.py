"""Wall time the worker can trust (issue 24.5): the PC's clock, unless the server disagrees.

A fleet PC's clock can be years off (a dead CMOS battery, a wrong time zone set by hand, a VM
restored from a snapshot). Decisions that compare wall times across restarts (how long a rolled-back
version stays refused; another helper's delegation expiry) use ``now()``: the PC's clock, plus the
difference to the server's HTTP ``Date`` header once the two disagree by more than SKEW_BOUND. The
client hands every answer's Date to ``server_said`` (one header lookup; parsed only when its text
changes, so at most once a second). Probation does not use wall time at all (update/probation.py).
Within the bound the PC's clock is used as is: a Date has one-second resolution and the answer
took its time to come. Until the server has answered once, ``now()`` is the PC's clock.

Tests inject the PC's clock by replacing ``time.time`` (what every other use of wall time reads).
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime

log = logging.getLogger("hive.clock")

SKEW_BOUND = 300.0  # seconds the PC's clock may be off the server's before the server's time is used

_offset = 0.0  # server minus PC, or 0 while they agree within SKEW_BOUND
_last_date: str | None = None


def offset_for(local: float, server: float, bound: float = SKEW_BOUND) -> float:
    """What to add to the PC's clock: the disagreement with the server when it passes ``bound``."""
    diff = server - local
    return diff if abs(diff) > bound else 0.0


def parse_http_date(text: str) -> float | None:
    """An HTTP Date header (RFC 9110 IMF-fixdate, or the obsolete forms) as a POSIX time; None if not one."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return when.timestamp()


def server_said(date: str | None) -> None:
    """An answer from the Hive server carried this Date header (or none)."""
    global _offset, _last_date
    if not date or date == _last_date:
        return
    _last_date = date
    server = parse_http_date(date)
    if server is None:
        return
    offset = offset_for(time.time(), server)
    if (offset == 0.0) != (_offset == 0.0) or abs(offset - _offset) > SKEW_BOUND:
        if offset:
            log.warning("this PC's clock is %+.0f s off the server's (HTTP Date %s): decisions that use wall time "
                        "use the server's time", -offset, date)
        else:
            log.info("this PC's clock agrees with the server's again (HTTP Date %s)", date)
    _offset = offset


def now() -> float:
    """The wall time to decide with (POSIX seconds)."""
    return time.time() + _offset


def reset() -> None:
    """Forget what the server said (tests)."""
    global _offset, _last_date
    _offset, _last_date = 0.0, None
