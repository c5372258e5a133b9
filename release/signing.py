"""The keys: make a key pair, delegate release keys, rotate the root, sign and verify a release zip
(``python -m release``; the ceremony: docs/release.md, "Keys").

The private key file holds the base64 of a 32-byte Ed25519 seed and nothing else. It lives
outside the project tree (keygen refuses a path inside it), is created readable by its owner
only, and its content never reaches a log, an error message or the zip: errors name the file,
never what is in it. The worker side (supervisor/update/verify.py) only verifies.

Signing writes two members into the zip beside the binary: ``release.json`` (the statement:
the binary's SHA-256 and size, version, platform, sequence) and ``release.sig`` (the base64
Ed25519 signature over verify.STATEMENT_DOMAIN + the exact release.json bytes), and
``release-trust.json`` (supervisor/update/trust.py: the root chain and the delegation that names
the release key; made once per delegation with ``python -m release delegate``, copied into
every zip).
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
from supervisor.update.trust import (
    DELEGATION_DOMAIN,
    DELEGATION_TYPE,
    ROOT_DOMAIN,
    ROOT_TYPE,
    TRUST,
    TRUST_TYPE,
    check_trust,
    parse_iso,
    parse_trust,
)
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
    returns its public key (base64): for a root key, the value of release.build --root-key; for a
    release key, the value of ``delegate --release-key``."""
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
                   trust: bytes, plat: str | None = None) -> dict[str, bytes]:
    """{release.json, release.sig, release-trust.json} for this binary, signed with a release key
    that the delegation in ``trust`` names (checked: a zip the fleet would refuse is never made)."""
    sha, size = sha256_file(binary)
    try:
        statement = make_statement(sha, size, version, plat or platform_tag(binary_member), sequence)
        delegation = check_delegation_text(trust)
    except UpdateRefused as exc:
        raise SigningError(f"not signing: {exc}") from None
    public = load_private_key(private_key_file).verify_key.encode()
    if public not in delegation:
        raise SigningError(f"not signing: {private_key_file} is not a release key of the delegation in {TRUST} "
                           f"({len(delegation)} key(s)); make a delegation for it (python -m release delegate)")
    return {STATEMENT: statement, SIGNATURE: sign_statement(statement, private_key_file), TRUST: trust}


def check_delegation_text(trust: bytes) -> tuple[bytes, ...]:
    """The release keys a release-trust.json delegates (signature not checked here: the signer has no
    root keys; verify_zip checks the whole chain). Raises UpdateRefused when it is not one."""
    from supervisor.update.trust import decode_key

    _, envelope = parse_trust(trust)
    try:
        data = orjson.loads(envelope["signed"])
        return tuple(decode_key(k, "a delegated key") for k in data["keys"])
    except (TypeError, KeyError, orjson.JSONDecodeError):
        raise UpdateRefused(f"{TRUST} holds no readable delegation") from None


def _envelope(text: bytes, domain: bytes, key_files: list[Path]) -> dict[str, Any]:
    sigs = [base64.b64encode(load_private_key(f).sign(domain + text).signature).decode("ascii") for f in key_files]
    return {"signed": text.decode("utf-8"), "signatures": sigs}


def make_root(version: int, new_keys: list[str], current_root_key: Path, new_root_key_files: list[Path]) -> bytes:
    """A root statement (version N+1, the new root public keys), signed by a key of the current root
    and by every new root private key given (one is enough for a worker; signing with the new key
    proves that someone holds it)."""
    from supervisor.update.trust import decode_key

    if isinstance(version, bool) or not isinstance(version, int) or version < 2:
        raise SigningError("a root statement's version is 2 or more (version 1 is the build's own root keys)")
    for i, key in enumerate(new_keys):
        try:
            decode_key(key, f"new root key {i + 1}")
        except UpdateRefused as exc:
            raise SigningError(str(exc)) from None
    publics = {public_key_of(f) for f in new_root_key_files}
    if not new_root_key_files or not publics <= set(new_keys):
        raise SigningError("sign a root statement with at least one of the new root keys it lists (--new-root-key)")
    text = orjson.dumps({"type": ROOT_TYPE, "version": version, "keys": new_keys})
    return orjson.dumps(_envelope(text, ROOT_DOMAIN, [current_root_key, *new_root_key_files]),
                        option=orjson.OPT_INDENT_2) + b"\n"


def make_trust(version: int, release_keys: list[str], expires: str, root_key: Path,
               roots: list[bytes] | None = None) -> bytes:
    """release-trust.json: the root chain (root statements, oldest first) and a delegation of
    ``release_keys`` until ``expires`` (UTC, 2027-06-01T00:00:00Z), signed with a root private key."""
    from supervisor.update.trust import decode_key

    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SigningError("a delegation's version is a whole number from 1, above every earlier delegation's")
    try:
        parse_iso(expires, "--expires")
        for i, key in enumerate(release_keys):
            decode_key(key, f"release key {i + 1}")
        chain = [orjson.loads(r) for r in roots or []]
    except (UpdateRefused, orjson.JSONDecodeError) as exc:
        raise SigningError(str(exc)) from None
    if not release_keys:
        raise SigningError("a delegation names at least one release key (--release-key)")
    text = orjson.dumps({"type": DELEGATION_TYPE, "version": version, "keys": release_keys, "expires": expires})
    doc = {"type": TRUST_TYPE, "roots": chain, "delegation": _envelope(text, DELEGATION_DOMAIN, [root_key])}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def binary_member_of(zf: zipfile.ZipFile) -> str:
    names = [n for n in BINARY_MEMBERS if n in zf.namelist()]
    if len(names) != 1:
        raise SigningError(f"the zip must hold exactly one of {', '.join(BINARY_MEMBERS)} at its root")
    return names[0]


def sign_zip(zip_path: Path, private_key_file: Path, version: str, sequence: int, trust: bytes,
             plat: str | None = None) -> Path:
    """Rewrite a release zip with a (new) signed statement for the binary inside; returns the zip."""
    from release.make_release import write_members

    zip_path = Path(zip_path)
    with zipfile.ZipFile(zip_path) as zf, tempfile.TemporaryDirectory(prefix="hive-sign-") as tmp:
        member = binary_member_of(zf)
        binary = Path(tmp) / member
        with zf.open(member) as src, open(binary, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
        others = {n: zf.read(n) for n in zf.namelist() if n not in (member, STATEMENT, SIGNATURE, TRUST)}
        extra = signed_members(binary, member, version, sequence, private_key_file, trust, plat)
        write_members(zip_path, binary, member, {**others, **extra})
    return zip_path


@dataclass
class Verified:
    statement: Statement
    binary_member: str
    root_version: int  # the root the chain led to (0: the given root keys themselves)
    delegation_version: int
    expires: str
    release_key: str


def verify_zip(zip_path: Path, root_keys: list[str], now: float | None = None) -> Verified:
    """What a worker built with these root keys checks (with nothing remembered): members, root chain,
    delegation, signature, statement, the binary's hash. Raises UpdateRefused with the worker's own message."""
    import time

    from supervisor.update.trust import build_root, iso

    keys = parse_keys(root_keys)
    if not keys:
        raise UpdateRefused("no root key to verify with (UPDATE_ROOT_KEYS is empty; pass --root-key)")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            member = binary_member_of(zf)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UpdateRefused(f"the release is not a readable zip: {exc}") from None
    except SigningError as exc:
        raise UpdateRefused(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="hive-verify-") as tmp:
        unpacked = extract_binary(Path(zip_path), Path(tmp), binary_name=member)
    trusted = check_trust(build_root(root_keys), unpacked.trust, 0, time.time() if now is None else now)
    statement = verify_statement(unpacked.statement, unpacked.signature, trusted.delegation.keys,
                                 f"delegation version {trusted.delegation.version}")
    check_binary(statement, unpacked.sha256, unpacked.size)
    if (statement.platform == "windows") != member.endswith(".exe"):
        raise UpdateRefused(f"the statement's platform {statement.platform} does not fit {member}")
    return Verified(statement=statement, binary_member=member, root_version=trusted.root.version,
                    delegation_version=trusted.delegation.version, expires=iso(trusted.delegation.expires),
                    release_key=base64.b64encode(trusted.delegation.keys[statement.key_index]).decode("ascii"))
