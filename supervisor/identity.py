"""Worker identity, kept exactly as the 1.0.x fleet keeps it (see hive-protocol-v1.md).

worker.conf holds the id (one line); workername.txt, if present, gives its prefix.
An existing worker.conf from a 1.0.x install is used as is: the server knows the
worker by this id, so an update must never change it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from supervisor.safetext import loggable
from supervisor.store.atomic import atomic_write

ID_FILE = "worker.conf"
PREFIX_FILE = "workername.txt"


class IdentityError(Exception):
    """An id the worker cannot send; the message is the one line shown to the operator."""


def header_problem(value: str) -> str | None:
    """Why ``value`` cannot be an HTTP header value (X-Worker-ID), or None. HTTP/1.1 headers are
    Latin-1 on the wire, and a control character (a second line in the file) would end the header."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError as exc:
        return (f"{value[exc.start]!r} is not a Latin-1 character (HTTP headers are Latin-1; "
                "use Latin letters, digits, '-' and '_')")
    bad = next((c for c in value if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0), None)
    if bad is not None:
        return f"it holds the control character {bad!r} (one line only)"
    return None


def _checked(value: str, path: Path) -> str:
    problem = header_problem(value)
    if problem:
        raise IdentityError(f"{path}: {loggable(value, 80)!r} cannot be sent as the worker id: {problem}")
    return value


def load_or_create_worker_id(home: Path) -> str:
    """The worker id; raises IdentityError if worker.conf or workername.txt holds one that no
    request could carry (before anything is written, so fixing the file is enough)."""
    id_path = home / ID_FILE
    if id_path.exists():
        worker_id = id_path.read_text(encoding="utf-8-sig", errors="replace").strip()
        if worker_id:
            return _checked(worker_id, id_path)
    prefix = "worker"
    prefix_path = home / PREFIX_FILE
    if prefix_path.exists():
        prefix = _checked(prefix_path.read_text(encoding="utf-8-sig", errors="replace").strip(), prefix_path) or "worker"
    worker_id = f"{prefix}_{secrets.token_hex(4)}"
    atomic_write(id_path, worker_id.encode("utf-8"))
    return worker_id


def worker_id_for(home: Path, version: str) -> str:
    """The id this worker sends, after checking that both of its identity headers
    (X-Worker-ID, X-Worker-Version) can be sent at all. Raises IdentityError."""
    worker_id = load_or_create_worker_id(home)
    problem = header_problem(version)
    if problem:
        raise IdentityError(f"WORKER_VERSION {version!r} cannot be sent in X-Worker-Version: {problem}")
    return worker_id
