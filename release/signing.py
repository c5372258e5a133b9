"""The release key: make a key pair, sign a release zip, verify one (``python -m release``).

The private key file holds the base64 of a 32-byte Ed25519 seed and nothing else. It lives
outside the project tree (keygen refuses a path inside it), is created readable by its owner
only, and its content never reaches a log, an error message or the zip: errors name the file,
never what is in it. The worker side (supervisor/update/verify.py) only verifies.

Signing writes two members into the zip beside the binary: ``release.json`` (the statement:
the binary's SHA-256 and size, version, platform, sequence) and ``release.sig`` (the base64
Ed25519 signature over verify.STATEMENT_DOMAIN + the exact release.json bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from supervisor.update.errors import UpdateRefused
from supervisor.update.extract import SIGNATURE, STATEMENT, extract_binary
from supervisor.update.verify import (
    STATEMENT_TYPE,
    Statement,
    check_binary,
    parse_keys,
    parse_statement,
    platform_tag,
    signed_message,
    verify_statement,
)

ROOT = Path(__file__).resolve().parent.parent
BINARY_MEMBERS = ("worker.exe", "worker")


class SigningError(Exception):
    """A key or zip problem, said without any key material."""


def _inside_tree(path: Path) -> bool:
    resolved = path.resolve()
    return resolved == ROOT or ROOT in resolved.parents


def keygen(private_key_file: Path) -> str:
    """Write a new private key (0600; never over an existing file, never inside the project tree);
    returns its public key (base64), the value for UPDATE_PUBLIC_KEYS."""
    from nacl.signing import SigningKey

    path = Path(private_key_file)
    if _inside_tree(path):
        raise SigningError(f"{path} is inside the project tree ({ROOT}); keep the private key outside it")
    seed = bytes(SigningKey.generate())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningError(f"{path} exists; not overwriting a key") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(base64.b64encode(seed).decode("ascii") + "\n")
    return public_key_of(path)


def load_private_key(private_key_file: Path) -> Any:
    from nacl.signing import SigningKey

    try:
        text = Path(private_key_file).read_text(encoding="ascii").strip()
        seed = base64.b64decode(text, validate=True)
    except (OSError, UnicodeDecodeError, binascii.Error, ValueError) as exc:
        # The file's content is never quoted: the exception text of a decoder could hold part of it.
        raise SigningError(f"{private_key_file}: not a readable private key file ({type(exc).__name__})") from None
    if len(seed) != 32:
        raise SigningError(f"{private_key_file}: a private key file holds the base64 of a 32-byte Ed25519 seed")
    return SigningKey(seed)


def public_key_of(private_key_file: Path) -> str:
    return base64.b64encode(bytes(load_private_key(private_key_file).verify_key)).decode("ascii")


def make_statement(sha256_hex: str, size: int, version: str, plat: str, sequence: int) -> bytes:
    """The release.json bytes for a binary (what ``python -m release sign`` signs)."""
    statement = orjson.dumps({"type": STATEMENT_TYPE, "sha256": sha256_hex.lower(), "size": size,
                              "version": version, "platform": plat, "sequence": sequence})
    parse_statement(statement)  # the signer refuses to sign what a worker would refuse to read
    return statement


def sign_statement(statement: bytes, private_key_file: Path) -> bytes:
    """release.sig: the base64 text of the signature over the domain prefix and the statement."""
    key = load_private_key(private_key_file)
    return base64.b64encode(key.sign(signed_message(statement)).signature) + b"\n"


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def signed_members(binary: Path, binary_member: str, version: str, sequence: int, private_key_file: Path,
                   plat: str | None = None) -> dict[str, bytes]:
    """{release.json: ..., release.sig: ...} for this binary."""
    sha, size = sha256_file(binary)
    try:
        statement = make_statement(sha, size, version, plat or platform_tag(binary_member), sequence)
    except UpdateRefused as exc:
        raise SigningError(f"not signing: {exc}") from None
    return {STATEMENT: statement, SIGNATURE: sign_statement(statement, private_key_file)}


def binary_member_of(zf: zipfile.ZipFile) -> str:
    names = [n for n in BINARY_MEMBERS if n in zf.namelist()]
    if len(names) != 1:
        raise SigningError(f"the zip must hold exactly one of {', '.join(BINARY_MEMBERS)} at its root")
    return names[0]


def sign_zip(zip_path: Path, private_key_file: Path, version: str, sequence: int, plat: str | None = None) -> Path:
    """Rewrite a release zip with a (new) signed statement for the binary inside; returns the zip."""
    from release.make_release import write_members

    zip_path = Path(zip_path)
    with zipfile.ZipFile(zip_path) as zf, tempfile.TemporaryDirectory(prefix="hive-sign-") as tmp:
        member = binary_member_of(zf)
        binary = Path(tmp) / member
        with zf.open(member) as src, open(binary, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
        others = {n: zf.read(n) for n in zf.namelist() if n not in (member, STATEMENT, SIGNATURE)}
        extra = signed_members(binary, member, version, sequence, private_key_file, plat)
        write_members(zip_path, binary, member, {**others, **extra})
    return zip_path


@dataclass
class Verified:
    statement: Statement
    binary_member: str


def verify_zip(zip_path: Path, public_keys: list[str]) -> Verified:
    """What a worker checks, with these keys: members, signature, statement, the binary's hash.
    Raises UpdateRefused with the worker's own message."""
    keys = parse_keys(public_keys)
    if not keys:
        raise UpdateRefused("no public key to verify with (UPDATE_PUBLIC_KEYS is empty; pass --key)")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            member = binary_member_of(zf)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UpdateRefused(f"the release is not a readable zip: {exc}") from None
    except SigningError as exc:
        raise UpdateRefused(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="hive-verify-") as tmp:
        unpacked = extract_binary(Path(zip_path), Path(tmp), binary_name=member)
    statement = verify_statement(unpacked.statement, unpacked.signature, keys)
    check_binary(statement, unpacked.sha256, unpacked.size)
    if (statement.platform == "windows") != member.endswith(".exe"):
        raise UpdateRefused(f"the statement's platform {statement.platform} does not fit {member}")
    return Verified(statement=statement, binary_member=member)
