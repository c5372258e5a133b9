"""Throwaway keys for tests (never the project's): a root key that delegates to a release key.

``keypair(folder, name)`` makes a root key and a release key, and a delegation of the release key
by the root key (version 1, far from expiring), written beside the release key as ``<name>.trust``
(what make_release puts into the zip as release-trust.json). It returns (release private key file,
ROOT public key): a worker trusts the root key, the zip is signed with the release key.
"""

from __future__ import annotations

from pathlib import Path

from release import signing

FAR = "2099-01-01T00:00:00Z"


def trust_file(key: Path) -> Path:
    return Path(str(key) + ".trust")


def trust_of(key: Path) -> bytes:
    """The release-trust.json made for this release key by keypair()."""
    return trust_file(key).read_bytes()


def keypair(folder: Path, name: str = "release.key") -> tuple[Path, str]:
    """(release private key file, root public key); the delegation is beside the key (trust_of)."""
    key = folder / name
    root = folder / (name + ".root")
    release_public = signing.keygen(key)
    root_public = signing.keygen(root)
    trust_file(key).write_bytes(signing.make_trust(1, [release_public], FAR, root))
    return key, root_public
