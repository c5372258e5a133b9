"""Take the worker binary out of a release zip, trusting nothing in the zip.

The zip may hold only the expected members (the platform's binary, plus the updater scripts,
which are not used: the binary carries its own). Any other member, an absolute, drive or UNC
path, a ``..``, a link or other special file, a duplicate (also by case), too many members, a
member too large or compressed suspiciously well refuses the whole zip. Only the binary is
written, streamed to a new file, and its path is checked on the resolved filesystem path.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from supervisor.update_verify import Refused

BINARY = "worker.exe" if os.name == "nt" else "worker"
ALLOWED = {BINARY, "updater.bat", "updater.sh"}
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


def extract_binary(zip_path: Path, dest_dir: Path, max_total: int = MAX_MEMBER_BYTES) -> Path:
    """Check every member, then write the binary to dest_dir/BINARY (executable). Raises Refused."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise Refused(f"the release is not a readable zip (truncated or corrupt): {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise Refused(f"the zip holds {len(infos)} members, more than {MAX_MEMBERS}")
        seen: set[str] = set()
        binary = None
        total = 0
        for info in infos:
            name = info.filename
            problem = check_name(name)
            if problem:
                raise Refused(f"zip member {name[:200]!r} refused: {problem}")
            if name.lower() in seen:
                raise Refused(f"zip member {name!r} refused: a duplicate")
            seen.add(name.lower())
            if name not in ALLOWED:
                raise Refused(f"zip member {name!r} refused: not part of a release (expected {BINARY}, updater.bat)")
            mode = info.external_attr >> 16
            if info.is_dir() or (mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG)):
                raise Refused(f"zip member {name!r} refused: a link or special file (mode {mode:o})")
            if info.flag_bits & 0x1:
                raise Refused(f"zip member {name!r} refused: encrypted")
            if info.file_size > max_total:
                raise Refused(f"zip member {name!r} refused: {info.file_size} bytes, over {max_total}")
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(1, info.compress_size):
                raise Refused(f"zip member {name!r} refused: compression ratio over {MAX_RATIO} (a zip bomb?)")
            total += info.file_size
            if total > max_total:
                raise Refused(f"the zip unpacks to more than {max_total} bytes")
            if name == BINARY:
                binary = info
        if binary is None:
            raise Refused(f"the zip has no {BINARY} at its root")
        return _write(zf, binary, dest_dir)


def _write(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    root = dest_dir.resolve()
    target = (root / info.filename).resolve()
    if target.parent != root:
        raise Refused(f"zip member {info.filename!r} refused: it resolves outside {root}")
    part = target.with_name(target.name + ".part")
    for stale in (part, target):
        if stale.is_symlink() or stale.exists():
            stale.unlink()
    written = 0
    try:
        with zf.open(info) as src, open(part, "xb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                written += len(chunk)
                if written > info.file_size:
                    raise Refused(f"zip member {info.filename!r} unpacks to more than its declared size")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if written != info.file_size:
            raise Refused(f"zip member {info.filename!r}: {written} of {info.file_size} bytes (corrupt)")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise Refused(f"zip member {info.filename!r} is corrupt: {exc}") from None
    except Refused:
        part.unlink(missing_ok=True)
        raise
    if os.name != "nt":
        os.chmod(part, 0o755)
    os.replace(part, target)
    return target
