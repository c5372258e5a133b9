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
