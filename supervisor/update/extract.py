"""Take the worker binary and the signed statement out of a release zip, trusting nothing in the zip.

The zip may hold only the expected members (the platform's binary, the signed statement
release.json + release.sig, the delegation release-trust.json, and the updater scripts, which are not used: the binary carries
its own). Any other member, an absolute, drive or UNC
path, a ``..``, a link or other special file, a duplicate (also by case), too many members, a
member too large or compressed suspiciously well refuses the whole zip. Only the binary is
written, streamed to a new file (hashed as it is written), and its path is checked on the
resolved filesystem path; the statement members are read into memory (a few hundred bytes).
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from supervisor.update.errors import UpdateRefused
from supervisor.update.trust import TRUST, TRUST_MAX_BYTES
from supervisor.update.verify import SIGNATURE_MAX_BYTES, STATEMENT_MAX_BYTES

BINARY = "worker.exe" if os.name == "nt" else "worker"
STATEMENT, SIGNATURE = "release.json", "release.sig"
SMALL_MEMBERS = {STATEMENT: STATEMENT_MAX_BYTES, SIGNATURE: SIGNATURE_MAX_BYTES, TRUST: TRUST_MAX_BYTES}
SCRIPTS = {"updater.bat", "updater.sh"}
MAX_MEMBERS = 8
MAX_MEMBER_BYTES = 512 * 1024 * 1024
MAX_RATIO = 50  # uncompressed / compressed, for members over RATIO_FLOOR
RATIO_FLOOR = 1024 * 1024


def check_name(name: str) -> str | None:
    """Why a member name is unsafe, or None."""
    if not name or "\x00" in name:
        return "an empty or NUL name"
    if "\\" in name:
        return "a backslash path"
    if name.startswith("/"):
        return "an absolute path"
    if ":" in name:
        return "a drive or stream path"
    if ".." in name.split("/"):
        return "a '..' path"
    if name.endswith("/"):
        return "a directory"
    if len(PurePosixPath(name).parts) != 1:
        return "a path in a folder"
    return None


@dataclass(frozen=True)
class Unpacked:
    binary: Path
    sha256: str  # of the binary as written
    size: int
    statement: bytes | None  # release.json, unverified
    signature: bytes | None  # release.sig, unverified
    trust: bytes | None = None  # release-trust.json (root chain and delegation), unverified


def extract_binary(zip_path: Path, dest_dir: Path, max_total: int = MAX_MEMBER_BYTES,
                   binary_name: str = BINARY) -> Unpacked:
    """Check every member, then write the binary to dest_dir/binary_name (executable only by this
    account) and read the statement members. Raises UpdateRefused."""
    allowed = {binary_name, *SCRIPTS, *SMALL_MEMBERS}
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UpdateRefused(f"the release is not a readable zip (truncated or corrupt): {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise UpdateRefused(f"the zip holds {len(infos)} members, more than {MAX_MEMBERS}")
        seen: set[str] = set()
        binary = None
        total = 0
        for info in infos:
            name = info.filename
            problem = check_name(name)
            if problem:
                raise UpdateRefused(f"zip member {name[:200]!r} refused: {problem}")
            if name.lower() in seen:
                raise UpdateRefused(f"zip member {name!r} refused: a duplicate")
            seen.add(name.lower())
            if name not in allowed:
                raise UpdateRefused(f"zip member {name!r} refused: not part of a release (expected {binary_name}, "
                              f"updater.bat, {STATEMENT}, {SIGNATURE}, {TRUST})")
            mode = info.external_attr >> 16
            if info.is_dir() or (mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG)):
                raise UpdateRefused(f"zip member {name!r} refused: a link or special file (mode {mode:o})")
            if info.flag_bits & 0x1:
                raise UpdateRefused(f"zip member {name!r} refused: encrypted")
            if info.file_size > max_total:
                raise UpdateRefused(f"zip member {name!r} refused: {info.file_size} bytes, over {max_total}")
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(1, info.compress_size):
                raise UpdateRefused(f"zip member {name!r} refused: compression ratio over {MAX_RATIO} (a zip bomb?)")
            total += info.file_size
            if total > max_total:
                raise UpdateRefused(f"the zip unpacks to more than {max_total} bytes")
            if name in SMALL_MEMBERS and info.file_size > SMALL_MEMBERS[name]:
                raise UpdateRefused(f"zip member {name!r} refused: {info.file_size} bytes, over {SMALL_MEMBERS[name]}")
            if name == binary_name:
                binary = info
        if binary is None:
            raise UpdateRefused(f"the zip has no {binary_name} at its root")
        small = {name: _read_small(zf, name) if name in seen else None for name in SMALL_MEMBERS}
        path, sha256, size = _write(zf, binary, dest_dir)
    return Unpacked(binary=path, sha256=sha256, size=size, statement=small[STATEMENT], signature=small[SIGNATURE],
                    trust=small[TRUST])


def _read_small(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        with zf.open(name) as src:
            data = src.read(SMALL_MEMBERS[name] + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UpdateRefused(f"zip member {name!r} is corrupt: {exc}") from None
    if len(data) > SMALL_MEMBERS[name]:
        raise UpdateRefused(f"zip member {name!r} unpacks to more than {SMALL_MEMBERS[name]} bytes")
    return data


def _write(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest_dir: Path) -> tuple[Path, str, int]:
    dest_dir.mkdir(parents=True, exist_ok=True)
    root = dest_dir.resolve()
    target = (root / info.filename).resolve()
    if target.parent != root:
        raise UpdateRefused(f"zip member {info.filename!r} refused: it resolves outside {root}")
    part = target.with_name(target.name + ".part")
    for stale in (part, target):
        if stale.is_symlink() or stale.exists():
            stale.unlink()
    written = 0
    digest = hashlib.sha256()
    try:
        with zf.open(info) as src, open(part, "xb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                written += len(chunk)
                if written > info.file_size:
                    raise UpdateRefused(f"zip member {info.filename!r} unpacks to more than its declared size")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if written != info.file_size:
            raise UpdateRefused(f"zip member {info.filename!r}: {written} of {info.file_size} bytes (corrupt)")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise UpdateRefused(f"zip member {info.filename!r} is corrupt: {exc}") from None
    except UpdateRefused:
        part.unlink(missing_ok=True)
        raise
    if os.name != "nt":
        os.chmod(part, 0o700)  # runnable by this account only: nobody else may run or read it
    os.replace(part, target)
    return target, digest.hexdigest(), written
