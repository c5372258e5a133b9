"""Waiting after server trouble: exponential backoff with full jitter, shared by
the claim and submit loops so neither hammers a server the other found down."""

from __future__ import annotations

import random
import threading
import time


class Backoff:
    def __init__(self, cap: float, base: float = 1.0, rng: random.Random | None = None) -> None:
        self.cap = cap
        self.base = base
        self.rng = rng or random.Random()
        self.failures = 0
        self.until = 0.0  # monotonic time before which nobody should call the server
        self.lock = threading.Lock()

    def failure(self, retry_after: float | None = None) -> float:
        """Record one failure; returns the delay chosen (Retry-After wins when the server sent one)."""
        with self.lock:
            self.failures += 1
            if retry_after is not None:
                delay = min(retry_after, max(self.cap, 3600.0))
            else:
                delay = self.rng.uniform(0, min(self.cap, self.base * 2 ** min(self.failures - 1, 30)))
            self.until = max(self.until, time.monotonic() + delay)
            return delay

    def success(self) -> None:
        with self.lock:
            self.failures = 0
            self.until = 0.0

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic())


def jittered(seconds: float, rng: random.Random | None = None, spread: float = 0.1) -> float:
    """``seconds`` plus or minus ``spread`` of it, so a fleet restarted together drifts apart."""
    if seconds <= 0:
        return 0.0
    return seconds * (1 + (rng or random).uniform(-spread, spread))


# ---- one result's own schedule (submitter.py): pure decisions, tested without a server -------------

RESULT_RETRY_CAP = 3600.0  # seconds: a result in its retry window is tried at least this often
# Answers that say the server (or the proxy before it) is overloaded or away, not that it dislikes this
# one body: they also hold back every other request for a while (the shared Backoff).
AWAY_STATUSES = frozenset({429, 502, 503, 504})
DEAD_RETRY_SHARE = 28  # dead letters are retried every window/28 (6 h at the default 7 days)...
DEAD_MAX_AGE_WINDOWS = 4  # ... until they are 4 windows old (28 days); they are never deleted


def result_delay(tries: int, rng: random.Random | None = None, cap: float = RESULT_RETRY_CAP) -> float:
    """Seconds before a result that failed ``tries`` times is posted again: 1, 2, 4 ... s up to ``cap``,
    with equal jitter (half the step fixed, half random) so a refused result is never retried at once
    and results refused together spread out."""
    step = min(cap, 2.0 ** min(max(tries, 1) - 1, 30))
    return step / 2 + (rng or random).uniform(0, step / 2)


def server_away(status: int | None) -> bool:
    """True when a failed POST says the server is unreachable or overloaded (no answer at all, or a
    429/502/503/504): then claims and every other result wait too, not only this one."""
    return status is None or status in AWAY_STATUSES


def gives_up(status: int | None, refused_since: float | None, now: float, window: float) -> bool:
    """Whether a failed result becomes a dead letter now: only when the server refused it (a result is
    never given up for a server or network that is away, however long) and has done so for ``window`` s."""
    return not server_away(status) and refused_since is not None and now - refused_since >= window


def dead_letters_to_retry(letters: list[tuple[str, int, float]], now: float, window: float,
                          max_bytes: int) -> list[str]:
    """Which dead letters (name, bytes, wall time it was written) get their slow retry: oldest first,
    younger than DEAD_MAX_AGE_WINDOWS windows, and together at most ``max_bytes``. Older ones stay in
    outbox-dead/ for a person to look at."""
    chosen, total = [], 0
    for name, size, written in sorted(letters):
        if now - written >= DEAD_MAX_AGE_WINDOWS * window:
            continue
        if total + size > max_bytes:
            break
        chosen.append(name)
        total += size
    return chosen
