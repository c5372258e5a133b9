"""Backoff with full jitter, capped at TIME_ERROR_SLEEP; Retry-After wins; success resets."""

import random

from supervisor.net.backoff import Backoff, jittered


def test_full_jitter_grows_exponentially_and_is_capped():
    b = Backoff(cap=10.0, base=1.0, rng=random.Random(3))
    ceilings = [1, 2, 4, 8, 10, 10, 10]
    delays = [b.failure() for _ in ceilings]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    many = [Backoff(cap=10.0, rng=random.Random(i)) for i in range(200)]
    for bb in many:
        for _ in range(6):
            bb.failure()
    assert max(bb.failure() for bb in many) > 8  # the cap is reached, not just approached
    assert 0 < b.remaining() <= 10


def test_retry_after_is_honoured_and_success_resets():
    b = Backoff(cap=5.0)
    assert b.failure(retry_after=30.0) == 30.0  # the server knows best, even above our cap
    assert 29 < b.remaining() <= 30
    b.success()
    assert b.remaining() == 0 and b.failures == 0
    assert b.failure() <= 1.0  # back to the first step


def test_jittered_no_task_sleep_spreads_a_fleet():
    values = [jittered(180, random.Random(i)) for i in range(100)]
    assert min(values) >= 162 and max(values) <= 198 and len(set(values)) > 90
    assert jittered(0) == 0
