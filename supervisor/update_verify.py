"""What an update task asks for, and whether its release is authentic (Ed25519, PyNaCl).

What is signed: the ASCII bytes ``hive-worker-release-v1:<sha256 of the zip, 64 lowercase hex>``.
The server passes the signature (base64 of the 64-byte Ed25519 signature) as the task's
``signature`` param; UPDATE_PUBLIC_KEYS lists the base64 raw 32-byte public keys that may
sign (several, for rotation). Keys and signatures are tiny and the zip is hashed while it
downloads, so a multi-megabyte release is never held in memory to be verified.

Make a key pair and sign a release (what the release command does when given a key file):

    python -m supervisor.update_verify keygen release-signing.key   # prints the public key
    python -m supervisor.update_verify sign release-signing.key release.zip
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

SIGNED_PREFIX = b"hive-worker-release-v1:"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")


class Refused(Exception):
    """Raised here; updater.py turns it into UpdateRefused (same message)."""


@dataclass(frozen=True)
class UpdateParams:
    url: str
    sha256: str | None = None  # lowercase hex
    size: int | None = None
    version: str | None = None
    signature: bytes | None = None


def parse_params(params: Any) -> UpdateParams:
    """The update task's params, checked; unknown keys are ignored (the server may add some)."""
    if not isinstance(params, dict):
        raise Refused(f"params must be a JSON object, got {type(params).__name__}")
    url = params.get("url")
    if not isinstance(url, str) or not url.strip():
        raise Refused("params.url is missing")
    url = url.strip()
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Refused(f"params.url must be an http(s) URL, got {url[:200]!r}")
    sha256 = params.get("sha256")
    if sha256 is not None:
        if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256.strip()):
            raise Refused("params.sha256 must be 64 hex digits")
        sha256 = sha256.strip().lower()
    size = params.get("size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise Refused(f"params.size must be a positive whole number of bytes, got {size!r}")
    version = params.get("version")
    if version is not None:
        if not isinstance(version, str) or not _VERSION.fullmatch(version.strip()):
            raise Refused(f"params.version is not a version string: {str(version)[:80]!r}")
        version = version.strip()
    signature = params.get("signature")
    if signature is not None:
        signature = _b64(signature, 64, "params.signature")
    return UpdateParams(url=url, sha256=sha256, size=size, version=version, signature=signature)


def _b64(value: Any, length: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise Refused(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"{what} is not valid base64") from None
    if len(raw) != length:
        raise Refused(f"{what} must decode to {length} bytes, got {len(raw)}")
    return raw


def key_problem(keys: Any) -> str | None:
    """Why UPDATE_PUBLIC_KEYS cannot be used, or None (usable as a settings check)."""
    try:
        parse_keys(keys)
    except Refused as exc:
        return str(exc)
    return None


def parse_keys(keys: Any) -> list[bytes]:
    if not keys:
        return []
    if not isinstance(keys, list):
        raise Refused("UPDATE_PUBLIC_KEYS must be a list of base64 Ed25519 public keys")
    return [_b64(k, 32, f"UPDATE_PUBLIC_KEYS[{i}]") for i, k in enumerate(keys)]


def signed_message(sha256_hex: str) -> bytes:
    return SIGNED_PREFIX + sha256_hex.lower().encode("ascii")


def verify(sha256_hex: str, signature: bytes | None, keys: list[bytes]) -> int:
    """Index of the key that signed this zip's hash; raises Refused when none did."""
    if signature is None:
        raise Refused("the update is not signed (UPDATE_PUBLIC_KEYS is set, params.signature is missing)")
    # _cffi_backend is imported by nacl's compiled module, where PyInstaller cannot see it.
    import _cffi_backend  # noqa: F401
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    message = signed_message(sha256_hex)
    for i, key in enumerate(keys):
        try:
            VerifyKey(key).verify(message, signature)
            return i
        except BadSignatureError:
            continue
    raise Refused(f"the signature does not verify against any of the {len(keys)} key(s) in UPDATE_PUBLIC_KEYS")


# ---- for the release side: make keys, sign ------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_private_key(path: Path) -> Any:
    from nacl.signing import SigningKey

    seed = base64.b64decode(Path(path).read_text(encoding="ascii").strip(), validate=True)
    if len(seed) != 32:
        raise ValueError(f"{path}: a private key file holds the base64 of a 32-byte Ed25519 seed")
    return SigningKey(seed)


def sign_release(sha256_hex: str, private_key_file: Path) -> str:
    """The ``signature`` param for a zip with this SHA-256 (base64)."""
    if not _HEX64.fullmatch(sha256_hex):
        raise ValueError("sha256_hex must be 64 hex digits")
    key = load_private_key(private_key_file)
    return base64.b64encode(key.sign(signed_message(sha256_hex)).signature).decode("ascii")


def public_key_of(private_key_file: Path) -> str:
    return base64.b64encode(bytes(load_private_key(private_key_file).verify_key)).decode("ascii")


def keygen(private_key_file: Path) -> str:
    """Write a new private key (refuses to overwrite one); returns its public key (base64)."""
    from nacl.signing import SigningKey

    path = Path(private_key_file)
    with open(path, "x", encoding="ascii") as f:
        f.write(base64.b64encode(bytes(SigningKey.generate())).decode("ascii") + "\n")
    return public_key_of(path)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "keygen":
        print(keygen(Path(argv[1])))
        return 0
    if len(argv) == 2 and argv[0] == "pubkey":
        print(public_key_of(Path(argv[1])))
        return 0
    if len(argv) == 3 and argv[0] == "sign":
        digest = sha256_file(Path(argv[2]))
        print(f"sha256 {digest}\nsignature {sign_release(digest, Path(argv[1]))}")
        return 0
    print("usage: python -m supervisor.update_verify keygen KEYFILE | pubkey KEYFILE | sign KEYFILE ZIP",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
