"""Make the signed release zip from a built binary: ``python -m release.make_release``.

    python -m release.make_release --sign-key KEYFILE --trust TRUSTFILE [--sequence N] [--binary dist/worker.exe]
                                   [--url URL] [--out dist/] [--statement-in-params]
    python -m release.make_release --unsigned ...      (labs: workers refuse it unless UPDATE_ALLOW_UNSIGNED)
    python -m release.make_release --dev-build ...     (labs: a binary without fleet settings)

Before anything is packed, the binary must print its version (``--version``), pass
``--self-test`` and carry its fleet: a server URL and root keys, as ``--print-config``
shows them with nothing around it (a 1.0.x PC that installs the zip starts the binary with
no arguments, no HIVE_* and no worker.toml: without a baked server URL it would never reach
the Hive again). A ``release.build --dev-build`` binary is refused unless ``--dev-build`` is
passed here too (a lab zip; never give it to a fleet). The zip holds at its root, in this order (a 1.0.x worker's
update path takes ``worker.exe`` from the root and ignores the rest):

    worker.exe    (``worker`` for a Linux/macOS binary; stored with mode 0755)
    updater.bat   (from the repo root, with CRLF line ends)
    release.json  (the signed statement: the binary's SHA-256 and size, version, platform, sequence)
    release.sig   (its Ed25519 signature by a release key, base64; docs/self-update.md)
    release-trust.json  (the root chain and the delegation naming that release key: --trust, made by
                  ``python -m release delegate``; docs/release.md, "Keys")

The sequence defaults to RELEASE_SEQUENCE in config.py when the binary's version is
WORKER_VERSION there (it was built from this tree); otherwise --sequence is required.
The zip is reproducible (fixed timestamps, fixed order; Ed25519 signatures are
deterministic). Printed: the zip's path, SHA-256 and size, a url-only params line
for 1.0.x workers, and as the last line the exact ``update_worker`` params JSON:
{"url", "sha256", "size", "version", "sequence"} (with --statement-in-params also
"release", "release_signature" and "release_trust"), also written beside the zip as ``<zip>.json``.
Without ``--url`` the url is a placeholder to replace.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

from release.build import ROOT, baked_config, binary_name, describe_fleet, run_binary
from supervisor.update.extract import SIGNATURE, STATEMENT
from supervisor.update.trust import TRUST
from supervisor.update.verify import platform_tag

ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed member timestamps: the same binary gives the same zip
UPDATER = ROOT / "updater.bat"


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


def write_zip(zip_path: Path, binary: Path, member: str, updater: bytes, signed: dict[str, bytes] | None = None) -> None:
    write_members(zip_path, binary, member, {"updater.bat": updater, **(signed or {})})


def write_members(zip_path: Path, binary: Path, member: str, others: dict[str, bytes]) -> None:
    """The binary first, then the other members in a fixed order (updater.bat, release.json, release.sig, release-trust.json)."""
    order = ["updater.bat", STATEMENT, SIGNATURE, TRUST]
    tmp = zip_path.with_name(zip_path.name + ".part")
    with zipfile.ZipFile(tmp, "w") as zf:
        with open(binary, "rb") as src, zf.open(_member(member, 0o755), "w") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
        for name in sorted(others, key=lambda n: (order.index(n) if n in order else len(order), n)):
            zf.writestr(_member(name, 0o644), others[name])
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
                    help="the release private key file (python -m release keygen FILE), kept outside the tree")
    ap.add_argument("--trust", type=Path, default=None,
                    help="release-trust.json: the delegation naming that release key (python -m release delegate)")
    ap.add_argument("--sequence", type=int, default=None,
                    help="release sequence, above every earlier release's (default: RELEASE_SEQUENCE in config.py)")
    ap.add_argument("--unsigned", action="store_true",
                    help="no signed statement (labs: workers refuse it unless UPDATE_ALLOW_UNSIGNED is on)")
    ap.add_argument("--dev-build", action="store_true",
                    help="pack a binary without fleet settings (labs only: a fleet PC would lose its server)")
    ap.add_argument("--statement-in-params", action="store_true",
                    help="also put release.json and release.sig into the params (old releases refused before download)")
    args = ap.parse_args(argv)
    if not args.unsigned and (args.sign_key is None or args.trust is None):
        print("error: pass --sign-key KEYFILE and --trust TRUSTFILE (workers refuse unsigned releases), or "
              "--unsigned for a lab", file=sys.stderr)
        return 2
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
    try:
        fleet, _ = baked_config(binary)
    except ValueError as exc:
        print(f"error: not releasing: {exc}", file=sys.stderr)
        return 1
    problem = fleet_problem(fleet)
    if problem and not args.dev_build:
        print(f"error: not releasing {binary.name}: {problem} (python -m release.build --server-url URL "
              "--root-key KEY; --dev-build packs it anyway, for a lab)", file=sys.stderr)
        return 2
    member = "worker.exe" if binary.suffix.lower() == ".exe" else "worker"
    out = (args.out or binary.parent).resolve()
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"worker-{version}-{platform_tag(member)}.zip"
    signed: dict[str, bytes] = {}
    sequence = None
    if not args.unsigned:
        from release.signing import SigningError, signed_members

        sequence = args.sequence if args.sequence is not None else _default_sequence(version)
        if sequence is None:
            print(f"error: the binary is version {version}, not this tree's WORKER_VERSION: pass --sequence N",
                  file=sys.stderr)
            return 2
        try:
            signed = signed_members(binary, member, version, sequence, args.sign_key, args.trust.read_bytes())
        except OSError as exc:
            print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 2
        except SigningError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    write_zip(zip_path, binary, member, crlf(UPDATER.read_bytes()), signed)

    digest = sha256_of(zip_path)
    size = zip_path.stat().st_size
    params: dict = {"url": args.url or f"<URL where {zip_path.name} is served>", "sha256": digest, "size": size,
                    "version": version}
    if sequence is not None:
        params["sequence"] = sequence
        if args.statement_in_params:
            params["release"] = signed[STATEMENT].decode("utf-8")
            params["release_signature"] = signed[SIGNATURE].decode("ascii").strip()
            params["release_trust"] = signed[TRUST].decode("utf-8")
    line = json.dumps(params, ensure_ascii=False)
    Path(str(zip_path) + ".json").write_text(line + "\n", encoding="utf-8")
    print(f"release: {zip_path}")
    print(f"members: {', '.join([member, 'updater.bat', *signed])}")
    print(f"version: {version}")
    print(f"fleet: {describe_fleet(fleet)}" + (" (DEV BUILD: labs only)" if problem else ""))
    print(f"sequence: {sequence}" if sequence is not None else "sequence: none: UNSIGNED (labs only)")
    print(f"sha256: {digest}")
    print(f"size: {size}")
    print("params for 1.0.x workers (url only): " + json.dumps({"url": params["url"]}, ensure_ascii=False))
    if not args.url:
        print("update_worker params (replace the url with where the zip is served):")
    else:
        print("update_worker params:")
    print(line)
    return 0


def fleet_problem(values: dict) -> str:
    """Why a binary showing these settings with nothing around it cannot go to a fleet ('' if it can)."""
    if not values.get("server_url"):
        return "it carries no server URL: a PC that starts it with no arguments would never reach the Hive"
    if not values.get("update_root_keys"):
        return "it trusts no root key: the fleet could never be updated again"
    return ""


def _default_sequence(version: str) -> int | None:
    """RELEASE_SEQUENCE of this tree's config.py, if the binary was built from it (same version)."""
    sys.path.insert(0, str(ROOT))
    try:
        import config
    finally:
        sys.path.remove(str(ROOT))
    sequence = getattr(config, "RELEASE_SEQUENCE", None)
    return sequence if config.WORKER_VERSION == version and isinstance(sequence, int) else None


if __name__ == "__main__":
    sys.exit(main())
