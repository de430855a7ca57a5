"""Who may do what in the archive (ST-3; UA IV.1, KZ 6, 13).

Three roles:

* ``recorder``: a recorder or docking station; may only upload (and journal its uploads).
* ``officer``: the responsible person (UA V.1, KZ 6): uploads, finds, holds and releases,
  sweeps, issues copies, keeps the journals, manages users.
* ``head``: the head of the unit (UA V.2): reads, reviews (check), reads and prints journals.

Users live in the archive settings with an scrypt hash of their password (salted, memory-hard:
a stolen settings file does not give the passwords away cheaply). Every command against the
archive authenticates the person and is written to the access journal, refused attempts too.
On S3 the roles also map to separate S3 credentials (hw-profiles/seaweedfs-iam.json), so the
storage itself refuses a recorder's read or delete even if this code were bypassed.
"""
from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from sessions.archive.config import ROLES, Settings, iso, utc_now
from sessions.archive.errors import AuthError, Refused, UsageError

ENV_USER = "EXAMREC_USER"
ENV_PASSWORD = "EXAMREC_PASSWORD"
ENV_NEW_PASSWORD = "EXAMREC_NEW_PASSWORD"

# scrypt cost: 2**14 * 8 * 128 bytes = 16 MiB and ~50 ms per check on a small PC.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 1 << 14, 8, 1, 32
MIN_PASSWORD = 8

# action -> roles allowed. One table, so a review of the access rules reads one place.
PERMISSIONS: dict[str, frozenset[str]] = {
    "upload": frozenset({"recorder", "officer"}),
    "find": frozenset({"officer", "head"}),
    "show": frozenset({"officer", "head"}),
    "check": frozenset({"officer", "head"}),
    "reindex": frozenset({"officer", "head"}),
    "journal-read": frozenset({"officer", "head"}),
    "journal-write": frozenset({"officer"}),
    "device": frozenset({"officer"}),
    "hold": frozenset({"officer"}),
    "release": frozenset({"officer"}),
    "sweep": frozenset({"officer"}),
    "copy": frozenset({"officer"}),
    "users": frozenset({"officer"}),
    "settings": frozenset({"officer"}),
}


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def may(self, action: str) -> bool:
        return self.role in PERMISSIONS.get(action, frozenset())

    def require(self, action: str) -> None:
        """Raise Refused naming the roles that may do ``action``."""
        if not self.may(action):
            allowed = ", ".join(sorted(PERMISSIONS.get(action, ()))) or "nobody"
            raise Refused(f"user {self.name!r} (role {self.role}) may not {action}; allowed roles: {allowed}")


def hash_password(password: str) -> dict[str, Any]:
    """A new salted scrypt record for ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=SCRYPT_LEN)
    return {"algorithm": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
            "salt": salt.hex(), "hash": digest.hex()}


def check_password(record: Mapping[str, Any], password: str) -> bool:
    """Constant-time comparison against a stored scrypt record."""
    try:
        if record.get("algorithm") != "scrypt":
            return False
        n, r, p = int(record["n"]), int(record["r"]), int(record["p"])
        salt, want = bytes.fromhex(record["salt"]), bytes.fromhex(record["hash"])
    except (KeyError, ValueError, TypeError):
        return False
    got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(want),
                         maxmem=256 * n * r + (1 << 20))
    return hmac.compare_digest(got, want)


def check_new_password(name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"password for {name!r} is too short: at least {MIN_PASSWORD} characters")
    if password.casefold() == name.casefold():
        raise UsageError(f"password for {name!r} must not be the user name")


def new_user(name: str, role: str, password: str) -> dict[str, Any]:
    """A user record for the settings (validated name, role and password)."""
    if role not in ROLES:
        raise UsageError(f"role {role!r} is unknown; roles are {', '.join(ROLES)}")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(name) > 64:
        raise UsageError(f"user name {name!r}: use letters, digits, '.', '-' and '_' (at most 64)")
    check_new_password(name, password)
    return {"name": name, "role": role, "password": hash_password(password), "created_at": iso(utc_now()),
            "disabled": False}


def authenticate(settings: Settings, name: str, password: str) -> User:
    """The user if the password matches; AuthError (without saying which part was wrong) if not."""
    rec = settings.user(name)
    # Check a dummy hash for unknown users too, so timing does not reveal which names exist.
    stored = rec["password"] if rec else {"algorithm": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                                          "salt": "00" * 16, "hash": "00" * SCRYPT_LEN}
    ok = check_password(stored, password)
    if not rec or not ok:
        raise AuthError(f"user {name!r}: unknown user or wrong password")
    if rec.get("disabled"):
        raise AuthError(f"user {name!r} is disabled; ask the responsible person (officer)")
    return User(name=name, role=str(rec["role"]))


def resolve_user(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    name = explicit or env.get(ENV_USER)
    if not name:
        raise UsageError(f"who is this? give --user NAME (or set ${ENV_USER}); every access to the archive is "
                         "authenticated and journaled")
    return name


def read_password(name: str, env_var: str = ENV_PASSWORD, prompt: str | None = None,
                  environ: Mapping[str, str] | None = None) -> str:
    """The password from the environment, else a terminal prompt, else a usage error."""
    env = os.environ if environ is None else environ
    if env.get(env_var):
        return env[env_var]
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(prompt or f"password for {name}: ")
    raise UsageError(f"no password for {name!r}: set ${env_var} or run the command in a terminal")
