"""``kronos-exec keys``: make and inspect CURVE key pairs for the intake endpoints.

``generate`` writes a ZeroMQ certificate pair (``<name>.key`` public,
``<name>.key_secret`` secret, mode 0600) and prints the Z85 public key and a
``[[security.clients]]`` table to paste into the engine's configuration;
``show`` prints the public key of an existing certificate file.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.intake import KEY_NAME, generate_keypair, load_keypair


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``generate`` and ``show``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = sub.add_parser("generate", help="write a new key pair and print its public key")
    gen.add_argument("name", help="base file name, e.g. server or algo-1")
    gen.add_argument("--dir", type=Path, default=Path("keys"), help="directory (default: keys)")
    gen.add_argument("--accounts", default="", help="comma-separated accounts for the printed "
                     "[[security.clients]] table (a client key)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing pair")
    show = sub.add_parser("show", help="print the Z85 public key of a certificate file")
    show.add_argument("file", type=Path, help="a .key or .key_secret file")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action.

    Exit status 1 when a file is missing, would be overwritten (either
    half of the pair, without ``--force``), or the name is not a plain
    file name (``engine.intake.KEY_NAME``).
    """
    if args.action == "show":
        if not args.file.is_file():
            print(f"kronos-exec keys: no such file {args.file}", file=sys.stderr)
            return 1
        try:
            public = load_keypair(args.file)[0]
        except (ValueError, OSError, UnicodeDecodeError) as exc:  # not a ZeroMQ certificate
            print(f"kronos-exec keys: {args.file} is not a CURVE key file: {exc}", file=sys.stderr)
            return 1
        print(public.decode("ascii"))
        return 0
    if not KEY_NAME.fullmatch(args.name):
        print(f"kronos-exec keys: {args.name!r} is not a key name: use letters, digits, '.', '_' "
              f"and '-', not starting with a dot", file=sys.stderr)
        return 1
    # Either half existing stops it: a lone secret file is still someone's key.
    for existing in (args.dir / f"{args.name}.key", args.dir / f"{args.name}.key_secret"):
        # (lexists: a dangling symlink in its place is someone's too, and would be replaced)
        if os.path.lexists(existing) and not args.force:
            print(f"kronos-exec keys: {existing} exists; --force to replace the pair",
                  file=sys.stderr)
            return 1
    public_file, secret_file = generate_keypair(args.dir, args.name)
    public = load_keypair(public_file)[0].decode("ascii")
    print(f"public key  {public}")
    print(f"public file {public_file}   (give to the other side)")
    print(f"secret file {secret_file}   (keep here; mode 0600)")
    accounts = [a.strip() for a in args.accounts.split(",") if a.strip()]
    if accounts:
        print("\n# for the engine's configuration:")
        print("[[security.clients]]")
        print(f'name = "{args.name}"')
        print(f'public_key_file = "{public_file}"')
        print(f"accounts = [{', '.join(repr(a).replace(chr(39), chr(34)) for a in accounts)}]")
    return 0
