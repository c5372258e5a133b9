"""Which release keys may sign: root keys, a root chain and an expiring delegation (a small TUF).

A build trusts one or more ROOT keys (``update_root_keys``, an input of the release build; their
private halves are kept offline and used only at a key ceremony, docs/release.md). A root key
never signs a release: it signs a DELEGATION, which names the RELEASE keys that may sign release
statements, carries a version and an expiry. A newer delegation replaces an older one (drop a key
from it to revoke that key); a worker remembers the highest delegation version it has accepted, so
an older delegation (which may still list a revoked key) never comes back. The root itself is
rotated by a ROOT statement (version N+1, the new root keys) signed by a key of the current root
and by a key of the new one; the release zip carries every root statement since the first, so
that a worker built long ago walks from the root it was built with to the current one.

All three travel in one zip member, ``release-trust.json``:

    {"type": "hive-worker-trust",
     "roots": [ENVELOPE, ...],        # root statements, oldest first (may be empty)
     "delegation": ENVELOPE}

    ENVELOPE = {"signed": "<the exact JSON text that was signed>", "signatures": ["<base64>", ...]}

The signed text is carried as a string, so its exact bytes are what was signed (nothing is
canonicalised); it is parsed only after a signature by a trusted key verified. Each kind has its
own signing domain, so that a signature made for one kind can never pass as another.

One signature by any one key of a set is enough (a threshold of 1: a root key is as powerful as
the whole root, and is kept offline for that reason).

What the worker remembers (``<home>/update/trust.json``): the newest root it walked to (version,
keys) and the highest delegation version it accepted. The newest root replaces the build's own
root keys from then on: after a root rotation, a stolen old root key is useless even to a worker
that still runs (or was rolled back to) a build made with it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from common import keys
from supervisor.update.errors import UpdateRefused

if TYPE_CHECKING:
    from supervisor.update.verify import Statement

TRUST = "release-trust.json"  # the zip member
TRUST_MAX_BYTES = 64 * 1024
STATE = "trust.json"  # in <home>/update/
TRUST_TYPE = "hive-worker-trust"
ROOT_TYPE = "hive-worker-root"
DELEGATION_TYPE = "hive-worker-delegation"
ROOT_DOMAIN = b"hive-worker root statement v1\n"
DELEGATION_DOMAIN = b"hive-worker delegation v1\n"
MAX_VERSION = 2**53
MAX_KEYS = 16
MAX_ROOTS = 64


@dataclass(frozen=True)
class Root:
    version: int  # 0: the build's own root keys, before any root statement was walked
    keys: tuple[bytes, ...]


@dataclass(frozen=True)
class Delegation:
    version: int
    keys: tuple[bytes, ...]  # the release keys
    expires: float  # seconds since the epoch, UTC


@dataclass(frozen=True)
class Trusted:
    """The outcome of a walk: the root reached and the delegation it signed."""

    root: Root
    delegation: Delegation


def b64key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_b64(value: Any, length: int, what: str) -> bytes:
    """common.keys.decode_b64, refusing the update (UpdateRefused) where the text is not a key or a
    signature of ``length`` bytes."""
    try:
        return keys.decode_b64(value, length, what)
    except keys.KeyFormatError as exc:
        raise UpdateRefused(str(exc)) from None


def decode_key(value: Any, what: str) -> bytes:
    """An Ed25519 public key: 32 bytes."""
    return decode_b64(value, 32, what)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: Any, what: str) -> float:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise UpdateRefused(f"{what} must be a UTC time like 2027-06-01T00:00:00Z")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise UpdateRefused(f"{what} must be a UTC time like 2027-06-01T00:00:00Z") from None


def _verifies(domain: bytes, text: bytes, signatures: list[bytes], keys: tuple[bytes, ...]) -> bool:
    """A signature in ``signatures`` by one of ``keys`` over domain + text."""
    import _cffi_backend  # noqa: F401  (imported by nacl's compiled module, where PyInstaller cannot see it)
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    message = domain + text
    for key in keys:
        for sig in signatures:
            try:
                VerifyKey(key).verify(message, sig)
            except BadSignatureError:
                continue
            return True
    return False


def _envelope(value: Any, what: str) -> tuple[bytes, list[bytes]]:
    if not isinstance(value, dict) or not isinstance(value.get("signed"), str):
        raise UpdateRefused(f"{what} is not a signed envelope ({{\"signed\": ..., \"signatures\": [...]}})")
    sigs = value.get("signatures")
    if not isinstance(sigs, list) or not 0 < len(sigs) <= MAX_KEYS:
        raise UpdateRefused(f"{what}: signatures must be a list of 1 to {MAX_KEYS} base64 signatures")
    raw = [decode_b64(sig if isinstance(sig, str) else None, 64, f"{what}: a signature") for sig in sigs]
    return value["signed"].encode("utf-8"), raw


def _typed_object(text: bytes, kind: str, what: str, noun: str) -> dict:
    """The JSON object in ``text`` whose "type" is ``kind``; UpdateRefused naming ``what`` otherwise."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise UpdateRefused(f"{what} is not valid JSON") from None
    if not isinstance(data, dict) or data.get("type") != kind:
        raise UpdateRefused(f"{what} is not a {kind} {noun}")
    return data


def _body(text: bytes, kind: str, what: str) -> tuple[int, tuple[bytes, ...], dict]:
    """(version, keys, the object) of a signed text, once its signature verified."""
    data = _typed_object(text, kind, what, "statement")
    version, keys = data.get("version"), data.get("keys")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version <= MAX_VERSION:
        raise UpdateRefused(f"{what}: version must be a positive whole number")
    if not isinstance(keys, list) or not 0 < len(keys) <= MAX_KEYS:
        raise UpdateRefused(f"{what}: keys must list 1 to {MAX_KEYS} public keys")
    return version, tuple(decode_key(k, f"{what}: keys[{i}]") for i, k in enumerate(keys)), data


def parse_trust(blob: bytes | None) -> tuple[list[Any], Any]:
    """(root envelopes, delegation envelope) of release-trust.json, unverified. Raises UpdateRefused."""
    if blob is None:
        raise UpdateRefused(f"the release carries no delegation ({TRUST}): a release must be signed by a release "
                            "key that a root key delegated to")
    if len(blob) > TRUST_MAX_BYTES:
        raise UpdateRefused(f"{TRUST} is over {TRUST_MAX_BYTES} bytes")
    data = _typed_object(blob, TRUST_TYPE, TRUST, "document")
    roots = data.get("roots", [])
    if not isinstance(roots, list) or len(roots) > MAX_ROOTS:
        raise UpdateRefused(f"{TRUST}: roots must be a list of at most {MAX_ROOTS} root statements")
    return roots, data.get("delegation")


def walk_roots(anchor: Root, roots: list[Any]) -> Root:
    """The newest root reachable from ``anchor``: each root statement, in order, is taken when a key of
    the root reached so far signed it, a key of its own signed it too, and its version is above. The
    others are passed over (older links, or links of a chain that does not start at this anchor):
    they cannot add trust, and the delegation must still be signed by the root reached."""
    current = anchor
    for index, envelope in enumerate(roots):
        what = f"{TRUST}: roots[{index}]"
        text, sigs = _envelope(envelope, what)
        if not _verifies(ROOT_DOMAIN, text, sigs, current.keys):
            continue
        version, keys, _ = _body(text, ROOT_TYPE, what)
        if version <= current.version:
            continue
        if not _verifies(ROOT_DOMAIN, text, sigs, keys):
            raise UpdateRefused(f"{what} (root version {version}) is not signed by a key of its own")
        current = Root(version=version, keys=keys)
    return current


def check_delegation(root: Root, envelope: Any, seen_version: int, now: float) -> Delegation:
    """The delegation, once a key of ``root`` signed it, it is not older than the newest seen here and
    not expired at ``now``. Raises UpdateRefused, one line."""
    text, sigs = _envelope(envelope, f"{TRUST}: delegation")
    if not _verifies(DELEGATION_DOMAIN, text, sigs, root.keys):
        raise UpdateRefused(f"the delegation is not signed by a root key this worker trusts (root version "
                            f"{root.version}, {len(root.keys)} key(s))")
    version, keys, data = _body(text, DELEGATION_TYPE, f"{TRUST}: delegation")
    expires = parse_iso(data.get("expires"), f"{TRUST}: delegation.expires")
    if version < seen_version:
        raise UpdateRefused(f"the delegation (version {version}) is older than version {seen_version} already "
                            "seen here: refused (it may list a revoked release key)")
    if now >= expires:
        raise UpdateRefused(f"the delegation (version {version}) expired at {data['expires']} (now {iso(now)})")
    return Delegation(version=version, keys=keys, expires=expires)


def check_trust(anchor: Root, blob: bytes | None, seen_version: int, now: float) -> Trusted:
    """Walk the root chain of release-trust.json from ``anchor`` and check its delegation (pure)."""
    roots, delegation = parse_trust(blob)
    root = walk_roots(anchor, roots)
    return Trusted(root=root, delegation=check_delegation(root, delegation, seen_version, now))


# ---- what this home remembers -------------------------------------------------------------------

def build_root(root_keys: list[str]) -> Root:
    return Root(version=0, keys=tuple(decode_key(k, f"UPDATE_ROOT_KEYS[{i}]") for i, k in enumerate(root_keys)))


def load_state(upd: Path, root_keys: list[str]) -> tuple[Root, int]:
    """(the root to start from, the highest delegation version seen): the root this home walked to,
    else the build's own root keys. Raises UpdateRefused when the file is unreadable (never "nothing
    seen": that would let an older delegation back in)."""
    path = upd / STATE
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return build_root(root_keys), 0
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UpdateRefused(f"cannot read {path} ({type(exc).__name__}); fix or delete it") from None
    try:
        seen = data["delegation_version"]
        root = data.get("root")
        if not isinstance(seen, int) or isinstance(seen, bool) or seen < 0:
            raise ValueError
        if root is None:
            return build_root(root_keys), seen
        keys = tuple(decode_key(k, "root key") for k in root["keys"])
        if not isinstance(root["version"], int) or root["version"] <= 0 or not keys:
            raise ValueError
        return Root(version=root["version"], keys=keys), seen
    except (TypeError, KeyError, ValueError, UpdateRefused):
        raise UpdateRefused(f"cannot read {path} (not a trust record); fix or delete it") from None


def save_state(upd: Path, trusted: Trusted, seen_version: int) -> bool:
    """Remember the root walked to (when it moved past the build's own) and the highest delegation
    version; True when something changed."""
    from supervisor.update.records import write_private

    path = upd / STATE
    try:
        old = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        old = None
    data = {"delegation_version": max(seen_version, trusted.delegation.version),
            "root": ({"version": trusted.root.version, "keys": [b64key(k) for k in trusted.root.keys]}
                     if trusted.root.version > 0 else None)}
    if data == old:
        return False
    write_private(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return True


def verify_trust(upd: Path, root_keys: list[str], blob: bytes | None, now: float) -> Trusted:
    """The release keys this home accepts for a release carrying ``blob``; remembers a newer root or
    delegation. ``now``: wall-clock seconds since the epoch, from the caller (one clock for every
    expiry check). Raises UpdateRefused."""
    anchor, seen = load_state(upd, root_keys)
    trusted = check_trust(anchor, blob, seen, now)
    save_state(upd, trusted, seen)
    return trusted


def verify_release(upd: Path, root_keys: list[str], statement: bytes | None, signature: bytes | None,
                   blob: bytes | None, now: float) -> Statement:
    """A release statement signed by a release key of a delegation this home accepts.
    Raises UpdateRefused, one line."""
    from supervisor.update.verify import verify_statement

    if statement is None or signature is None:
        return verify_statement(statement, signature, ())  # its own "not signed" refusal
    trusted = verify_trust(upd, root_keys, blob, now)
    return verify_statement(statement, signature, trusted.delegation.keys,
                            f"delegation version {trusted.delegation.version}")
