"""What an update task asks for, and whether its release is ours (Ed25519, PyNaCl).

A release carries a signed statement (docs/self-update.md, "The signed statement"): the
exact bytes of ``release.json`` (a small JSON object: the binary's SHA-256 and size, its
version, the target platform and the release sequence) and ``release.sig`` (the base64 of
an Ed25519 signature over ``STATEMENT_DOMAIN + those bytes``). Both are members of the
release zip, so that a server which sends only ``{"url": ...}`` still delivers them; the
task may also give them as ``params.release`` / ``params.release_signature`` (and
``params.release_trust``), which lets a worker refuse an old release before downloading it.
Which keys may sign a statement is decided in trust.py: the release keys of a delegation that
a root key (UPDATE_ROOT_KEYS, baked into the build) signed.

This module only verifies; making keys and signing live in release/ (``python -m release``).
"""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlparse

import orjson

from common.keys import KeyFormatError, parse_root_keys
from common.safetext import redact_url
from supervisor.update.errors import UpdateRefused
from supervisor.update.trust import TRUST_MAX_BYTES, decode_b64

# The signature covers this prefix too: a signature made for anything else (another format,
# another program using the same key) can never pass as a release statement.
STATEMENT_DOMAIN = b"hive-worker release statement v1\n"
STATEMENT_TYPE = "hive-worker-release"
STATEMENT_MAX_BYTES = 4096
SIGNATURE_MAX_BYTES = 256  # base64 of 64 bytes plus whitespace
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")
_PLATFORM = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_SEQUENCE = 2**53  # a JSON number every parser reads exactly


@dataclass(frozen=True)
class UpdateParams:
    url: str
    sha256: str | None = None  # of the zip, lowercase hex
    size: int | None = None  # of the zip
    version: str | None = None
    sequence: int | None = None  # a claim only; the signed statement must say the same
    statement: bytes | None = None  # params.release: the exact release.json text
    signature: bytes | None = None  # params.release_signature: its signature, base64 text
    trust: bytes | None = None  # params.release_trust: the release-trust.json text (trust.py)


@dataclass(frozen=True)
class Statement:
    """A verified release statement."""

    sha256: str  # of the binary, lowercase hex
    size: int  # of the binary
    version: str
    platform: str
    sequence: int
    key_index: int = -1  # which of the delegation's release keys signed it


def platform_tag(binary_name: str | None = None) -> str:
    """The platform a binary is for: "windows" for worker.exe, else os-machine ("linux-x86_64")."""
    if (binary_name or "").lower().endswith(".exe") or (binary_name is None and os.name == "nt"):
        return "windows"
    machine = platform.machine().lower() or "unknown"
    return f"{sys.platform.rstrip('0123456789')}-{machine}"


def parse_params(params: Any) -> UpdateParams:
    """The update task's params, checked; unknown keys are ignored (the server may add some).
    The fields are checked in this order and the first bad one is named."""
    if not isinstance(params, dict):
        raise UpdateRefused(f"params must be a JSON object, got {type(params).__name__}")
    return UpdateParams(url=_url(params.get("url")), sha256=_sha256(params.get("sha256")),
                        size=_size(params.get("size")), version=_version(params.get("version")),
                        sequence=_sequence(params.get("sequence")), **_signed_parts(params))


# One check per field of the params: the value, checked and normalised, or UpdateRefused.

def _url(url: object) -> str:
    if not isinstance(url, str) or not url.strip():
        raise UpdateRefused("params.url is missing")
    url = url.strip()
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UpdateRefused(f"params.url must be an http(s) URL, got {redact_url(url)[:200]!r}")
    return url


def _sha256(sha256: object) -> str | None:
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256.strip()):
        raise UpdateRefused("params.sha256 must be 64 hex digits")
    return sha256.strip().lower()


def _positive_int(value: object, high: int | None = None) -> TypeGuard[int]:
    """A JSON whole number above 0 (and at most ``high``); true and false are not numbers here."""
    return (isinstance(value, int) and not isinstance(value, bool) and value > 0
            and (high is None or value <= high))


def _size(size: object) -> int | None:
    if size is None or _positive_int(size):
        return size
    raise UpdateRefused(f"params.size must be a positive whole number of bytes, got {size!r}")


def _version(version: object) -> str | None:
    if version is None:
        return None
    if not isinstance(version, str) or not _VERSION.fullmatch(version.strip()):
        raise UpdateRefused(f"params.version is not a version string: {str(version)[:80]!r}")
    return version.strip()


def _sequence(sequence: object) -> int | None:
    if sequence is None or _positive_int(sequence, MAX_SEQUENCE):
        return sequence
    raise UpdateRefused(f"params.sequence must be a positive whole number, got {str(sequence)[:40]!r}")


def _signed_parts(params: dict[str, object]) -> dict[str, bytes | None]:
    """params.release, .release_signature and .release_trust: all three or none, as bytes."""
    statement, signature = params.get("release"), params.get("release_signature")
    trust = params.get("release_trust")
    if (statement is None) != (signature is None):
        raise UpdateRefused("params.release and params.release_signature come together")
    if statement is None:
        if trust is not None:
            raise UpdateRefused("params.release, params.release_signature and params.release_trust come together")
        return {"statement": None, "signature": None, "trust": None}
    if not isinstance(statement, str) or len(statement) > STATEMENT_MAX_BYTES:
        raise UpdateRefused(f"params.release must be the release.json text (at most {STATEMENT_MAX_BYTES} bytes)")
    if not isinstance(signature, str) or len(signature) > SIGNATURE_MAX_BYTES:
        raise UpdateRefused("params.release_signature must be the base64 text of release.sig")
    if trust is None:
        raise UpdateRefused("params.release, params.release_signature and params.release_trust come together")
    if not isinstance(trust, str) or len(trust) > TRUST_MAX_BYTES:
        raise UpdateRefused("params.release_trust must be the release-trust.json text")
    return {"statement": statement.encode("utf-8"), "signature": signature.encode("ascii", "replace"),
            "trust": trust.encode("utf-8")}


def parse_keys(keys: Any) -> list[bytes]:
    """UPDATE_ROOT_KEYS decoded; UpdateRefused naming the key that is not one."""
    try:
        return parse_root_keys(keys)
    except KeyFormatError as exc:
        raise UpdateRefused(str(exc)) from None


def signed_message(statement: bytes) -> bytes:
    """What the release key signs: the domain prefix, then the statement's exact bytes."""
    return STATEMENT_DOMAIN + statement


def verify_statement(statement: bytes | None, signature: bytes | None, keys: list[bytes] | tuple[bytes, ...],
                     whose: str = "the given keys") -> Statement:
    """The statement, once a key in ``keys`` (the release keys of a checked delegation) is shown to have signed its exact bytes. Raises UpdateRefused.

    The bytes are parsed only after the signature verified: nothing unsigned is interpreted."""
    if statement is None or signature is None:
        raise UpdateRefused("the release is not signed: no release.json and release.sig in the zip (nor in the params)")
    if len(statement) > STATEMENT_MAX_BYTES:
        raise UpdateRefused(f"release.json is over {STATEMENT_MAX_BYTES} bytes")
    raw_sig = decode_b64(signature, 64, "release.sig")
    # _cffi_backend is imported by nacl's compiled module, where PyInstaller cannot see it.
    import _cffi_backend  # noqa: F401
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    message = signed_message(statement)
    for index, key in enumerate(keys):
        try:
            VerifyKey(key).verify(message, raw_sig)
        except BadSignatureError:
            continue
        return parse_statement(statement, index)
    raise UpdateRefused(f"the release signature does not verify against any of the {len(keys)} release key(s) "
                        f"of {whose}")


def check_binary(statement: Statement, sha256_hex: str, size: int) -> None:
    """The binary is the one the statement names, byte for byte; raises UpdateRefused."""
    if (sha256_hex, size) != (statement.sha256, statement.size):
        raise UpdateRefused(f"the binary in the zip is not the signed one (sha256 {sha256_hex}, {size} bytes; "
                      f"signed: {statement.sha256}, {statement.size} bytes)")


def parse_statement(statement: bytes, key_index: int = -1) -> Statement:
    """The fields of release.json (flat object, bounded); raises UpdateRefused when one is missing or wrong."""
    try:
        data = orjson.loads(statement)
    except orjson.JSONDecodeError:
        raise UpdateRefused("release.json is not valid JSON") from None
    if not isinstance(data, dict) or data.get("type") != STATEMENT_TYPE:
        raise UpdateRefused(f"release.json is not a {STATEMENT_TYPE} statement")
    sha256, size, version = data.get("sha256"), data.get("size"), data.get("version")
    plat, sequence = data.get("platform"), data.get("sequence")
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
        raise UpdateRefused("release.json: sha256 must be 64 hex digits")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise UpdateRefused("release.json: size must be a positive whole number")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise UpdateRefused("release.json: version is not a version string")
    if not isinstance(plat, str) or not _PLATFORM.fullmatch(plat):
        raise UpdateRefused("release.json: platform is not a platform tag")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 < sequence <= MAX_SEQUENCE:
        raise UpdateRefused("release.json: sequence must be a positive whole number")
    return Statement(sha256=sha256.lower(), size=size, version=version, platform=plat, sequence=sequence,
                     key_index=key_index)

