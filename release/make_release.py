"""Make the release zip from a built binary: ``python -m release.make_release``.

    python -m release.make_release [--binary dist/worker.exe] [--url URL] [--out dist/]

Before anything is packed, the binary must print its version (``--version``) and
pass ``--self-test``. The zip holds exactly two members at its root, as a 1.0.x
worker's update path expects (it takes ``worker.exe`` from the root):

    worker.exe   (``worker`` for a Linux/macOS binary; stored with mode 0755)
    updater.bat  (from the repo root, with CRLF line ends)

The zip is reproducible (fixed timestamps, fixed order). Printed: the zip's path,
SHA-256 and size, a url-only params line for 1.0.x workers (in case they refuse
keys they do not know), and as the last line the exact ``update_worker`` params
JSON for the server: {"url": ..., "sha256": ..., "size": ..., "version": ...},
also written beside the zip as ``<zip>.json``. Upload the zip to the URL first,
or pass ``--url`` with where it will live; without it the url is a placeholder to
replace. Signing: see docs/release.md (comes with self-update).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import zipfile
from pathlib import Path

from release.build import ROOT, binary_name, run_binary

ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed member timestamps: the same binary gives the same zip
UPDATER = ROOT / "updater.bat"


def platform_tag(member: str) -> str:
    if member.endswith(".exe"):
        return "windows"
    machine = platform.machine().lower() or "unknown"
    return f"{sys.platform.rstrip('0123456789')}-{machine}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def crlf(data: bytes) -> bytes:
    """cmd.exe misreads labels and gotos in LF-only batch files: ship CRLF whatever git checked out."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _member(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so that external_attr carries the mode for unzip
    info.external_attr = (0o100000 | mode) << 16
    return info


def write_zip(zip_path: Path, binary: Path, member: str, updater: bytes) -> None:
    tmp = zip_path.with_name(zip_path.name + ".part")
    with zipfile.ZipFile(tmp, "w") as zf:
        with open(binary, "rb") as src, zf.open(_member(member, 0o755), "w") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
        zf.writestr(_member("updater.bat", 0o644), updater)
    os.replace(tmp, zip_path)


def check_binary(binary: Path) -> tuple[str | None, str]:
    """(version, problem): the binary's own version, and why it must not be released ('' if fine)."""
    got = run_binary(binary, "--version")
    version = got.stdout.strip() if got.returncode == 0 else None
    if not version:
        return None, f"{binary} --version failed (exit {got.returncode}): {got.stderr.strip()[-500:]}"
    with tempfile.TemporaryDirectory(prefix="hive-release-selftest-") as home:
        got = run_binary(binary, "--self-test", "--home", home)
    if got.returncode != 0:
        return version, f"{binary} --self-test failed (exit {got.returncode}): {(got.stdout + got.stderr).strip()[-1500:]}"
    return version, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m release.make_release", description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, default=ROOT / "dist" / binary_name(),
                    help=f"the built binary (default: dist/{binary_name()})")
    ap.add_argument("--out", type=Path, default=None, help="folder for the zip (default: the binary's folder)")
    ap.add_argument("--url", default=None, help="where the zip will be downloaded from (goes into the params JSON)")
    ap.add_argument("--sign-key", type=Path, default=None,
                    help="Ed25519 private key file (python -m supervisor.update_verify keygen FILE): adds the "
                         "signature param that workers with UPDATE_PUBLIC_KEYS require (docs/self-update.md)")
    args = ap.parse_args(argv)
    binary: Path = args.binary.resolve()
    if not binary.is_file():
        print(f"error: no binary at {binary}: build it first with python -m release.build", file=sys.stderr)
        return 2
    if not UPDATER.is_file():
        print(f"error: {UPDATER} is missing", file=sys.stderr)
        return 2
    version, problem = check_binary(binary)
    if problem:
        print(f"error: not releasing: {problem}", file=sys.stderr)
        return 1
    assert version is not None
    member = "worker.exe" if binary.suffix.lower() == ".exe" else "worker"
    out = (args.out or binary.parent).resolve()
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"worker-{version}-{platform_tag(member)}.zip"
    write_zip(zip_path, binary, member, crlf(UPDATER.read_bytes()))

    digest = sha256_of(zip_path)
    size = zip_path.stat().st_size
    params = {"url": args.url or f"<URL where {zip_path.name} is served>", "sha256": digest, "size": size,
              "version": version}
    if args.sign_key:
        from supervisor.update_verify import sign_release

        params["signature"] = sign_release(digest, args.sign_key)
    line = json.dumps(params, ensure_ascii=False)
    Path(str(zip_path) + ".json").write_text(line + "\n", encoding="utf-8")
    print(f"release: {zip_path}")
    print(f"members: {member}, updater.bat")
    print(f"version: {version}")
    print(f"sha256: {digest}")
    print(f"size: {size}")
    print("params for 1.0.x workers (url only): " + json.dumps({"url": params["url"]}, ensure_ascii=False))
    if not args.url:
        print("update_worker params (replace the url with where the zip is served):")
    else:
        print("update_worker params:")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
