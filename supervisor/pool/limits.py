"""The limit decision of one running task, apart from any process: given its limits, its wall
time and (when this turn measures) its tree's memory and CPU, which limit it broke, if any."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from common.vocabulary import FailureKind

MB = 1024 * 1024


@dataclass(frozen=True)
class Measured:
    """A task's process tree as one measurement saw it."""

    rss: int  # bytes, the whole tree
    cpu: float  # seconds since dispatch, the whole tree
    processes: int


Breach = tuple[FailureKind, str]


def needs_measuring(limits: Mapping[str, float]) -> bool:
    """Whether a memory or CPU limit is set: only then is the tree worth reading."""
    return bool(limits["memory_mb"] or limits["cpu"])


def breach(limits: Mapping[str, float], elapsed: float,
           measure: Callable[[], Measured] | None = None) -> Breach | None:
    """The limit broken, as (kind, text for the log and the server), or None.

    ``limits``: "time" and "cpu" in seconds, "memory_mb"; 0 turns one off. Wall time is free
    and checked first; ``measure`` (None on turns that do not measure) reads the tree, called
    only when a memory or CPU limit could still decide.
    """
    if limits["time"] and elapsed > limits["time"]:
        return FailureKind.TIME_LIMIT, f"time limit of {limits['time']:g} s reached ({elapsed:.1f} s wall time)"
    if measure is None or not needs_measuring(limits):
        return None
    usage = measure()
    if limits["memory_mb"] and usage.rss > limits["memory_mb"] * MB:
        return FailureKind.MEMORY_LIMIT, (f"memory limit of {limits['memory_mb']:g} MB reached "
                                          f"({usage.rss / MB:.0f} MB in {usage.processes} process(es))")
    if limits["cpu"] and usage.cpu > limits["cpu"]:
        return FailureKind.CPU_LIMIT, (f"CPU limit of {limits['cpu']:g} s reached ({usage.cpu:.1f} s CPU "
                                       f"in {usage.processes} process(es))")
    return None
