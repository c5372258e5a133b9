"""``python -m release``: the keys and signed zips (the ceremony: docs/release.md, "Keys").

    python -m release keygen KEYFILE                 new key pair (root or release key); prints the public key
    python -m release pubkey KEYFILE                 the public key of an existing private key file
    python -m release delegate --root-key ROOTKEYFILE --release-key PUB [--release-key PUB2]
                               --version N --expires 2027-06-01 [--root-chain root-2.json ...] --out TRUST
                                                     release-trust.json: the root chain and a delegation of
                                                     these release keys, signed with a root key
    python -m release rotate-root --root-key CURRENT.key --new-root-key NEW.key [--new-root-key ...]
                               --version N --out root-N.json
                                                     a root statement: the new root keys, signed by the current root
    python -m release sign KEYFILE ZIP --trust TRUST --version V --sequence N [--platform P]
                                                     (re)write release.json + release.sig + release-trust.json
    python -m release verify ZIP --root-key PUB ...  check a zip as a worker built with these root keys would

Building and packing are ``python -m release.build`` and ``python -m release.make_release``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from release.signing import (
    SigningError,
    keygen,
    make_root,
    make_trust,
    public_key_of,
    sign_zip,
    verify_zip,
)
from supervisor.update.errors import UpdateRefused


def _expires(text: str) -> str:
    """--expires: a date (midnight UTC) or a full UTC time."""
    return text + "T00:00:00Z" if len(text) == 10 else text


def _write_new(path: Path, data: bytes) -> None:
    try:
        with open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        raise SigningError(f"{path} exists; not overwriting it") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m release", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keygen", help="make a key pair (the private key file is created 0600, never overwritten)")
    p.add_argument("keyfile", type=Path)
    p = sub.add_parser("pubkey", help="print the public key of a private key file")
    p.add_argument("keyfile", type=Path)
    p = sub.add_parser("delegate", help="write release-trust.json: a root key delegates to release keys")
    p.add_argument("--root-key", type=Path, required=True, help="a current root PRIVATE key file (offline)")
    p.add_argument("--release-key", action="append", required=True,
                   help="a release PUBLIC key (base64) that may sign releases; repeatable")
    p.add_argument("--version", type=int, required=True, help="above every earlier delegation's (revokes them)")
    p.add_argument("--expires", required=True, type=_expires, help="UTC date (2027-06-01) or 2027-06-01T00:00:00Z")
    p.add_argument("--root-chain", type=Path, action="append", default=[],
                   help="a root statement (rotate-root), oldest first; every one since the first root")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("rotate-root", help="write a root statement: the next root keys, signed by the current root")
    p.add_argument("--root-key", type=Path, required=True, help="a current root PRIVATE key file")
    p.add_argument("--new-root-key", type=Path, action="append", required=True,
                   help="a new root PRIVATE key file (it signs too); repeatable")
    p.add_argument("--version", type=int, required=True, help="2 for the first rotation, then +1")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("sign", help="sign the binary inside a release zip")
    p.add_argument("keyfile", type=Path, help="the release PRIVATE key file")
    p.add_argument("zip", type=Path)
    p.add_argument("--trust", type=Path, required=True, help="release-trust.json (python -m release delegate)")
    p.add_argument("--version", required=True, help="the binary's version (worker --version)")
    p.add_argument("--sequence", type=int, required=True, help="above every earlier release's sequence")
    p.add_argument("--platform", default=None, help="default: windows for worker.exe, else this machine's")
    p = sub.add_parser("verify", help="check a release zip as a worker would")
    p.add_argument("zip", type=Path)
    p.add_argument("--root-key", action="append", default=None, help="a trusted root public key (base64); repeatable")
    args = ap.parse_args(argv)
    try:
        if args.command == "keygen":
            public = keygen(args.keyfile)
            print(f"private key: {args.keyfile} (keep it offline, outside the tree; back it up)")
            print(f"public key (a root key: release.build --root-key; a release key: delegate --release-key): {public}")
        elif args.command == "pubkey":
            print(public_key_of(args.keyfile))
        elif args.command == "delegate":
            roots = [p.read_bytes() for p in args.root_chain]
            _write_new(args.out, make_trust(args.version, args.release_key, args.expires, args.root_key, roots))
            print(f"wrote {args.out}: delegation version {args.version} of {len(args.release_key)} release key(s) "
                  f"until {args.expires}, signed by root key {public_key_of(args.root_key)}, "
                  f"{len(roots)} root statement(s) in its chain")
        elif args.command == "rotate-root":
            new_keys = [public_key_of(f) for f in args.new_root_key]
            _write_new(args.out, make_root(args.version, new_keys, args.root_key, args.new_root_key))
            print(f"wrote {args.out}: root version {args.version}: {', '.join(new_keys)}; signed by the current "
                  f"root key {public_key_of(args.root_key)} and the new one(s)")
        elif args.command == "sign":
            sign_zip(args.zip, args.keyfile, args.version, args.sequence, args.trust.read_bytes(), args.platform)
            print(f"signed {args.zip}: version {args.version}, sequence {args.sequence}")
        else:
            keys = args.root_key
            if keys is None:
                from config import UPDATE_ROOT_KEYS

                keys = list(UPDATE_ROOT_KEYS)
            v = verify_zip(args.zip, keys)
            s = v.statement
            print(f"ok: {args.zip}: {v.binary_member} version {s.version}, sequence {s.sequence}, platform "
                  f"{s.platform}, sha256 {s.sha256}, {s.size} bytes; signed by release key {v.release_key}, "
                  f"delegation version {v.delegation_version} until {v.expires}, root version {v.root_version}")
            print(json.dumps({"version": s.version, "sequence": s.sequence, "platform": s.platform,
                              "delegation_version": v.delegation_version, "expires": v.expires}))
    except OSError as exc:
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except (SigningError, UpdateRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
