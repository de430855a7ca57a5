"""The device's Ed25519 key and the signature of the finished manifest.

Each recorder holds one private key, created on first use and never leaving the machine; its
public key goes into every signed manifest and is exported (`examrec key --export`) so a records
officer can register the device and a court can check that a session came from it.

Key file: PKCS#8 PEM, mode 0600, in a folder created 0700. A key file that others can read is
refused (like ssh refuses such keys): anybody who could read it could sign forged manifests.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core import durable
from sessions.evidence.jcs import canonicalize
from sessions.evidence.manifest import FORMAT_V1, canonical_json

if TYPE_CHECKING:
    from core.profile import Profile

log = logging.getLogger(__name__)

ALGORITHM = "ed25519"
SIGNATURE_KEY = "signature"
ENV_KEY = "EXAMREC_KEY"
SYSTEM_KEY_PATH = Path("/var/lib/examrec/device.key")
USER_KEY_PATH = Path("~/.config/examrec/device.key")

PublicKeyLike = Ed25519PublicKey | Ed25519PrivateKey | bytes | str


class KeyFileError(Exception):
    """The key file cannot be used: the message names the file and the fix."""


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable(path: Path) -> bool:
    """Whether we could create or update ``path`` (its folder exists writable, or can be made)."""
    if path.exists():
        return os.access(path, os.R_OK | os.W_OK)
    base = _nearest_existing(path.parent)
    return base.is_dir() and os.access(base, os.W_OK | os.X_OK)


def default_key_path(profile_key: str | os.PathLike[str] | None = None, *,
                     environ: Mapping[str, str] | None = None,
                     system_path: Path = SYSTEM_KEY_PATH,
                     user_path: Path = USER_KEY_PATH) -> Path:
    """Where the device key lives: the profile's ``signing_key`` when set, else $EXAMREC_KEY,
    else /var/lib/examrec/device.key when writable (a root service), else ~/.config/examrec/device.key."""
    env = os.environ if environ is None else environ
    if profile_key:
        return Path(profile_key).expanduser()
    if env.get(ENV_KEY):
        return Path(env[ENV_KEY]).expanduser()
    if _writable(system_path):
        return system_path
    return Path(user_path).expanduser()


def key_path_for(profile: "Profile | None") -> Path:
    """The key path a profile implies (a relative ``signing_key`` is relative to the profile file)."""
    if profile is not None and profile.signing_key:
        return default_key_path(profile.resolve(profile.signing_key))
    return default_key_path()


def _check_mode(path: Path) -> None:
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyFileError(f"{path}: the device key is readable or writable by others "
                           f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")


def load_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an existing device key; KeyFileError when it is absent, exposed or not an Ed25519 key."""
    p = Path(path)
    try:
        _check_mode(p)
        data = p.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{p}: no device key here") from None
    except PermissionError:
        raise KeyFileError(f"{p}: not allowed to read the device key (run as its owner)") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{p}: not a PEM private key ({exc}); it is left untouched: move it away "
                           "only if this device may get a new identity") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{p}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_or_create_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The device key at ``path``, created on first use (file 0600, new folders 0700).

    Creation never replaces an existing file: the key is written to a temp file and hard-linked
    into place, so two processes starting at once end up with the same key, and a damaged key
    file is reported rather than silently swapped for a new identity.
    """
    p = Path(path).expanduser()
    if p.exists():
        return load_key(p)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd, tmp = tempfile.mkstemp(prefix=".device-key.", dir=p.parent)  # mkstemp: mode 0600
    try:
        os.write(fd, pem)
        durable.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, p)
        except FileExistsError:
            log.info("device key %s was created by another process meanwhile; using it", p)
            return load_key(p)
    finally:
        os.unlink(tmp)
    durable.fsync_dir(p.parent)
    log.warning("created a new device key %s (fingerprint %s)", p, fingerprint(key))
    return key


def _public(key: PublicKeyLike) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, bytes) and len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(key)
    return load_public_key(key)


def public_key_bytes(key: PublicKeyLike) -> bytes:
    """The raw 32-byte public key."""
    return _public(key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_hex(key: PublicKeyLike) -> str:
    """The public key as 64 hex digits (the form stored in the manifest)."""
    return public_key_bytes(key).hex()


def public_key_pem(key: PublicKeyLike) -> str:
    """The public key as a PEM SubjectPublicKeyInfo block (readable by openssl)."""
    return _public(key).public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def fingerprint(key: PublicKeyLike) -> str:
    """Short name of a public key for people to compare: the first 16 bytes of SHA-256 of the raw
    key, as 8 groups of 4 hex digits (``3f2a:91c0:...``)."""
    digest = hashlib.sha256(public_key_bytes(key)).hexdigest()[:32]
    return ":".join(digest[i:i + 4] for i in range(0, 32, 4))


def load_public_key(data: str | bytes) -> Ed25519PublicKey:
    """Parse an exported public key: PEM, or 64 hex digits (whitespace and colons ignored).
    Raises ValueError with a plain message otherwise."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    if "-----BEGIN" in text:
        start = text.index("-----BEGIN")
        key = serialization.load_pem_public_key(text[start:].encode("ascii"))
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"not an Ed25519 public key ({type(key).__name__})")
        return key
    compact = "".join(text.split()).replace(":", "")
    try:
        raw = bytes.fromhex(compact)
    except ValueError:
        raise ValueError("not a PEM public key nor 64 hex digits") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes (64 hex digits), got {len(raw)} bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def signed_body(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest without ``signature`` in canonical form, RFC 8785
    (JCS) for format examrec-session/2, the older sorted-keys form for examrec-session/1."""
    body = {k: v for k, v in manifest.items() if k != SIGNATURE_KEY}
    if manifest.get("format") == FORMAT_V1:
        return canonical_json(body)
    return canonicalize(body)


def sign_manifest(manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``manifest`` with ``signature`` {algorithm, public_key, value}.

    The body is first normalised through JSON (tuples become lists, etc.) so what is signed is
    exactly what a reader of manifest.json reconstructs.
    """
    # Normalised through JSON as written (not through the canonical form: JCS writes 1.0 as 1, and
    # the manifest as stored must keep the values the segment-entry hashes were computed over).
    body = json.loads(json.dumps({k: v for k, v in manifest.items() if k != SIGNATURE_KEY},
                                 ensure_ascii=False, allow_nan=False))
    value = key.sign(signed_body(body))
    body[SIGNATURE_KEY] = {"algorithm": ALGORITHM, "public_key": public_key_hex(key), "value": value.hex()}
    return body


def check_signature(manifest: Mapping[str, Any],
                    expected_public_key: PublicKeyLike | None = None) -> tuple[bool, str]:
    """Check the manifest's signature against its own public key (and ``expected_public_key``
    when given). Returns (ok, why): why names the signing key's fingerprint or what is wrong."""
    sig = manifest.get(SIGNATURE_KEY)
    if sig is None:
        return False, "the manifest is not signed"
    if not isinstance(sig, dict):
        return False, "signature is not an object"
    if sig.get("algorithm") != ALGORITHM:
        return False, f"signature algorithm {sig.get('algorithm')!r} is not {ALGORITHM!r}"
    try:
        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(sig.get("public_key", ""))))
        value = bytes.fromhex(str(sig.get("value", "")))
    except ValueError:
        return False, "signature public_key or value is not valid hex of the right length"
    try:
        pub.verify(value, signed_body(manifest))
    except InvalidSignature:
        return False, (f"signature by key {fingerprint(pub)} does not match the manifest "
                       "(changed after signing)")
    except ValueError as exc:  # e.g. NaN in the manifest: canonical JSON refuses it
        return False, f"manifest cannot be put in canonical form: {exc}"
    if expected_public_key is not None:
        want = _public(expected_public_key)
        if public_key_bytes(want) != public_key_bytes(pub):
            return False, (f"signed by key {fingerprint(pub)}, not by the expected key "
                           f"{fingerprint(want)}")
    return True, f"signed by key {fingerprint(pub)}"
