"""``python -m release``: the release key and signed zips (docs/self-update.md, "Releasing").

    python -m release keygen KEYFILE                 new key pair; prints the public key (release.build --public-key)
    python -m release pubkey KEYFILE                 the public key of an existing private key file
    python -m release sign KEYFILE ZIP --version V --sequence N [--platform P]
                                                     (re)write release.json + release.sig in a release zip
    python -m release verify ZIP --key PUBKEY ...    check a zip as a worker trusting these keys would

Building and packing are ``python -m release.build`` and ``python -m release.make_release``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from release.signing import SigningError, keygen, public_key_of, sign_zip, verify_zip
from supervisor.update.errors import UpdateRefused


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m release", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keygen", help="make a key pair (the private key file is created 0600, never overwritten)")
    p.add_argument("keyfile", type=Path)
    p = sub.add_parser("pubkey", help="print the public key of a private key file")
    p.add_argument("keyfile", type=Path)
    p = sub.add_parser("sign", help="sign the binary inside a release zip")
    p.add_argument("keyfile", type=Path)
    p.add_argument("zip", type=Path)
    p.add_argument("--version", required=True, help="the binary's version (worker --version)")
    p.add_argument("--sequence", type=int, required=True, help="above every earlier release's sequence")
    p.add_argument("--platform", default=None, help="default: windows for worker.exe, else this machine's")
    p = sub.add_parser("verify", help="check a release zip as a worker would")
    p.add_argument("zip", type=Path)
    p.add_argument("--key", action="append", default=None, help="a trusted public key (base64); repeatable")
    args = ap.parse_args(argv)
    try:
        if args.command == "keygen":
            public = keygen(args.keyfile)
            print(f"private key: {args.keyfile} (keep it offline, outside the tree; back it up)")
            print(f"public key (give it to python -m release.build --public-key): {public}")
        elif args.command == "pubkey":
            print(public_key_of(args.keyfile))
        elif args.command == "sign":
            sign_zip(args.zip, args.keyfile, args.version, args.sequence, args.platform)
            print(f"signed {args.zip}: version {args.version}, sequence {args.sequence}")
        else:
            keys = args.key
            if keys is None:
                from config import UPDATE_PUBLIC_KEYS

                keys = list(UPDATE_PUBLIC_KEYS)
            verified = verify_zip(args.zip, keys)
            s = verified.statement
            print(f"ok: {args.zip}: {verified.binary_member} version {s.version}, sequence {s.sequence}, platform "
                  f"{s.platform}, sha256 {s.sha256}, {s.size} bytes; signed by key {keys[s.key_index]}")
            print(json.dumps({"version": s.version, "sequence": s.sequence, "platform": s.platform}))
    except (SigningError, UpdateRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
