"""`examrec key`: show the device's signing key; `--export` prints (or writes) its public key so a
records officer can register the device and anyone can check its sessions with
`examrec verify --public-key FILE`."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from sessions import exitcodes
from sessions.evidence import keystore
from core.profile import load_profile
from sessions.evidence.signing import (default_key_path, fingerprint, key_path_for, load_key, load_or_create_key,
                                       load_public_key, public_key_hex, public_key_pem)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "key", help="show or export the device's signing key",
        description="The Ed25519 device key signs every finished session. Its path: --key, else the "
                    "profile's signing_key, else $EXAMREC_KEY, else /var/lib/examrec/device.key when "
                    "writable (root), else ~/.config/examrec/device.key. It is created on first use.")
    p.add_argument("--export", action="store_true",
                   help="print the public key (PEM and hex) and its fingerprint; creates the key if absent")
    p.add_argument("--out", metavar="FILE", help="with --export: also write the PEM public key to FILE")
    p.add_argument("--profile", metavar="FILE", help="hardware profile whose signing_key to use")
    p.add_argument("--key", metavar="PATH", help="device key path (overrides the profile and defaults)")
    p.add_argument("--register", metavar="FILE",
                   help="trust this public key (PEM or hex, as --export writes) for `examrec verify`; needs --name")
    p.add_argument("--name", metavar="NAME", help="with --register: the recorder's inventory number (or the office)")
    p.add_argument("--trusted", action="store_true", help="list the registered (trusted) keys")
    p.add_argument("--signs", default="recorder", metavar="KIND",
                   help="with --register: what the key may sign: recorder (sessions, a recorder's journal "
                        "entries), office (the archive's journal entries and copy kits), or recorder,office")
    p.add_argument("--trusted-keys", metavar="FILE", help="the key store to use (default: $EXAMREC_TRUSTED_KEYS, "
                                                          "/etc/examrec/trusted-keys, ~/.config/examrec/trusted-keys)")
    p.set_defaults(func=run)


def _trust(args: argparse.Namespace) -> int:
    store = Path(args.trusted_keys) if args.trusted_keys else keystore.store_path()
    try:
        if args.register:
            if not args.name:
                print("examrec key: --register needs --name (the recorder's inventory number)", file=sys.stderr)
                return exitcodes.USAGE
            try:
                pub = load_public_key(Path(args.register).read_bytes())
            except (OSError, ValueError) as exc:
                print(f"examrec key: cannot use public key {args.register}: {exc}", file=sys.stderr)
                return exitcodes.USAGE
            entry = keystore.register(pub, args.name, store, kinds=tuple(args.signs.split(",")))
            print(f"registered {entry.fingerprint} ({','.join(entry.kinds)}) as {entry.name} in {store}")
            return exitcodes.OK
        for entry in keystore.load(store).values():
            print(f"{entry.fingerprint}  {','.join(entry.kinds):15}  {entry.name}")
        return exitcodes.OK
    except keystore.KeyStoreError as exc:
        print(f"examrec key: {exc}", file=sys.stderr)
        return exitcodes.USAGE


def run(args: argparse.Namespace) -> int:
    if args.register or args.trusted:
        return _trust(args)
    if args.out and not args.export:
        print("examrec key: --out needs --export", file=sys.stderr)
        return exitcodes.USAGE
    if args.key:
        path = default_key_path(args.key)
    elif args.profile:
        path = key_path_for(load_profile(args.profile))  # ProfileError -> exit 2 in cli.main
    else:
        path = key_path_for(None)
    try:
        if args.export:
            existed = path.exists()
            key = load_or_create_key(path)
            if not existed:
                print(f"examrec key: created a new device key at {path}", file=sys.stderr)
        elif not path.exists():
            print(f"no device key at {path} yet; it is created on first use (or with --export)")
            return exitcodes.OK
        else:
            key = load_key(path)
    except OSError as exc:
        print(f"examrec key: cannot create the key at {path}: {exc}", file=sys.stderr)
        return exitcodes.REFUSED
    if not args.export:
        print(f"key: {path}")
        print(f"fingerprint: {fingerprint(key)}")
        return exitcodes.OK
    pem = public_key_pem(key)
    if args.out:
        out = Path(args.out)
        try:
            out.write_text(pem)
        except OSError as exc:
            print(f"examrec key: cannot write {out}: {exc}", file=sys.stderr)
            return exitcodes.USAGE
        log.info("public key written to %s", out)
    sys.stdout.write(pem)
    print(f"public key (hex): {public_key_hex(key)}")
    print(f"fingerprint: {fingerprint(key)}")
    if args.out:
        print(f"written to: {os.fspath(args.out)}")
    return exitcodes.OK
