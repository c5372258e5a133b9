"""Self-update (issue 6). Interface used by the arbiter; the implementation is in progress.

prepare() downloads, verifies, extracts and pre-flights a release; launch() hands
over to the updater script and the caller exits; on_start() repairs whatever a
power cut left; on_healthy() reports the outcome of an update to the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class UpdateRefused(Exception):
    """The update cannot or must not be installed; the message is the one line the server gets."""


@dataclass
class Staged:
    binary: Path
    version: str | None


def prepare(params: Any, settings: Any, running_version: str) -> Staged | None:
    """A verified, pre-flighted binary ready to swap in; None when ``version`` is already running."""
    raise UpdateRefused("self-update is not available in this build yet")


def launch(staged: Staged, settings: Any, task_id: Any, worker_id: str, running_version: str) -> None:
    raise UpdateRefused("self-update is not available in this build yet")


def on_start(home: Path) -> None:
    """Before anything else, frozen only: make sure a runnable worker.exe is in place."""


def on_healthy(home: Path, version: str, worker_id: str) -> list[tuple[Any, bool, bytes, float]]:
    """After the first good server contact: results about a finished update to post, as
    (task_id, ok, raw_result_json, pause_seconds)."""
    return []
