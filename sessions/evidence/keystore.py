"""The trusted keys: which public keys this machine accepts as a recorder's (or the office's).

A valid signature only says *some* key signed; anybody can make a key. What makes a session
evidence is that the key is one the records office registered for a recorder it issued. The key
store is a plain text file, one key a line: 64 hex digits of the Ed25519 public key, what the
key may sign (``recorder``: sessions and the recorder's journal entries; ``office``: the
archive's journal entries and copy kits; both: ``recorder,office``), then the name it was
registered under (inventory number, office), e.g.

    3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29  recorder  INV-0042 car 7
    9d1f0c6e0b8a3e8f5d7c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f10  office    records office, Kyiv
    # lines starting with # are comments

Where: $EXAMREC_TRUSTED_KEYS, else /etc/examrec/trusted-keys when it exists, else
~/.config/examrec/trusted-keys. `examrec key --register FILE --name NAME` adds a key;
`examrec verify` without --public-key accepts only a session signed by a key listed here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from core import durable
from sessions.evidence.signing import PublicKeyLike, fingerprint, public_key_hex

ENV_TRUSTED = "EXAMREC_TRUSTED_KEYS"
SYSTEM_STORE = Path("/etc/examrec/trusted-keys")
USER_STORE = Path("~/.config/examrec/trusted-keys")


class KeyStoreError(ValueError):
    """The key store file cannot be read: the message names the file and the line."""


KINDS = ("recorder", "office")


@dataclass(frozen=True)
class TrustedKey:
    public_key: str  # 64 hex digits
    name: str
    kinds: tuple[str, ...] = ("recorder",)

    def may_sign(self, kind: str) -> bool:
        return kind in self.kinds

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


def store_path(environ: Mapping[str, str] | None = None) -> Path:
    """The key store this machine uses (see the module doc)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_TRUSTED):
        return Path(env[ENV_TRUSTED]).expanduser()
    if SYSTEM_STORE.exists():
        return SYSTEM_STORE
    return USER_STORE.expanduser()


def load(path: Path | None = None) -> dict[str, TrustedKey]:
    """Trusted keys by hex public key (an absent file: none)."""
    p = path or store_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyStoreError(f"{p}: cannot read the trusted keys: {exc}") from None
    keys: dict[str, TrustedKey] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        hexkey, _, rest = line.partition(" ")
        try:
            hexkey = public_key_hex(hexkey)
        except ValueError:
            raise KeyStoreError(f"{p}: line {n} does not start with a 64-hex-digit Ed25519 public key") from None
        first, _, name = rest.strip().partition(" ")
        kinds = tuple(first.split(","))
        if not first or not all(k in KINDS for k in kinds):
            raise KeyStoreError(f"{p}: line {n}: after the key comes what it may sign "
                                f"({', '.join(KINDS)}, or both joined by a comma)")
        keys[hexkey] = TrustedKey(hexkey, name.strip(), kinds)
    return keys


def register(key: PublicKeyLike, name: str, path: Path | None = None,
             kinds: tuple[str, ...] = ("recorder",)) -> TrustedKey:
    """Add a key (idempotent for the same key; a name is required and kept on one line)."""
    name = " ".join(name.split())
    if not kinds or not all(k in KINDS for k in kinds):
        raise KeyStoreError(f"a key signs for {' or '.join(KINDS)}, not {', '.join(kinds)}")
    if not name:
        raise KeyStoreError("a registered key needs a name (the recorder's inventory number, or the office)")
    p = path or store_path()
    hexkey = public_key_hex(key)
    existing = load(p)
    if hexkey in existing:
        return existing[hexkey]
    p.parent.mkdir(parents=True, exist_ok=True)
    old = p.read_bytes() if p.exists() else b"# examrec trusted keys: <ed25519 public key hex>  <recorder|office|recorder,office>  <name>\n"
    if old and not old.endswith(b"\n"):
        old += b"\n"
    durable.write_file_atomic(p, old + f"{hexkey}  {','.join(kinds)}  {name}\n".encode("utf-8"))
    return TrustedKey(hexkey, name, tuple(kinds))


def untrusted(public_key: str | None, kind: str = "recorder", path: Path | None = None) -> str | None:
    """None when ``public_key`` is registered to sign for ``kind``, else why not, in words."""
    if not public_key:
        return "not signed"
    known = load(path).get(public_key.lower())
    if known is None:
        return f"signed by an unregistered key {fingerprint(public_key)}"
    if not known.may_sign(kind):
        return f"signed by {known.name} ({fingerprint(public_key)}), a key registered for {', '.join(known.kinds)}"
    return None
