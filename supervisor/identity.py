"""Worker identity, kept exactly as the 1.0.x fleet keeps it (see hive-protocol-v1.md).

worker.conf holds the id (one line); workername.txt, if present, gives its prefix.
An existing worker.conf from a 1.0.x install is used as is: the server knows the
worker by this id, so an update must never change it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from supervisor.home import atomic_write

ID_FILE = "worker.conf"
PREFIX_FILE = "workername.txt"


def load_or_create_worker_id(home: Path) -> str:
    id_path = home / ID_FILE
    if id_path.exists():
        worker_id = id_path.read_text(encoding="utf-8-sig", errors="replace").strip()
        if worker_id:
            return worker_id
    prefix = "worker"
    prefix_path = home / PREFIX_FILE
    if prefix_path.exists():
        prefix = prefix_path.read_text(encoding="utf-8-sig", errors="replace").strip() or "worker"
    worker_id = f"{prefix}_{secrets.token_hex(4)}"
    atomic_write(id_path, worker_id.encode("utf-8"))
    return worker_id
