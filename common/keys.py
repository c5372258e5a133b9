"""Ed25519 keys and signatures as base64 text: the one decoder (settings check the keys with it,
update/ checks signatures and delegations with it). No crypto here, only the shape."""

from __future__ import annotations

import base64
import binascii
from typing import Any


class KeyFormatError(ValueError):
    """Base64 that is not what it must be; the message names the value and is one line."""


def decode_b64(value: Any, length: int, what: str) -> bytes:
    """``value`` (base64 text, or bytes of it) decoded to exactly ``length`` bytes; KeyFormatError
    naming ``what`` otherwise."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise KeyFormatError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{what} is not valid base64") from None
    if len(raw) != length:
        raise KeyFormatError(f"{what} must decode to {length} bytes, got {len(raw)}")
    return raw


def parse_root_keys(keys: Any) -> list[bytes]:
    """UPDATE_ROOT_KEYS as raw 32-byte Ed25519 public keys; KeyFormatError if any is not one."""
    if not keys:
        return []
    if not isinstance(keys, list):
        raise KeyFormatError("UPDATE_ROOT_KEYS must be a list of base64 Ed25519 public keys")
    return [decode_b64(k, 32, f"UPDATE_ROOT_KEYS[{i}]") for i, k in enumerate(keys)]


def key_problem(keys: Any) -> str | None:
    """Why UPDATE_ROOT_KEYS cannot be used, or None (a settings check)."""
    try:
        parse_root_keys(keys)
    except KeyFormatError as exc:
        return str(exc)
    return None
