"""Who may do what in the archive (ST-3; UA IV.1, KZ 6, 13).

Three roles:

* ``recorder``: a recorder or docking station; may only upload (and journal its uploads).
* ``officer``: the responsible person (UA V.1, KZ 6): uploads, finds, holds and releases,
  sweeps, issues copies, keeps the journals, manages users.
* ``head``: the head of the unit (UA V.2): reads, reviews (check), reads and prints journals.

Users live in the archive settings: a login, the person's full name and position as the forms print
them (a recorder account: the device's name and inventory number), and an scrypt hash of the
password (salted, memory-hard: a stolen settings file does not give the passwords away cheaply).
The cost follows today's recommendation (OWASP: N=2^17, r=8, p=1, 128 MiB); a password hashed at a
lower cost is re-hashed at the person's next login. Every command against the
archive authenticates the person and is written to the access journal, refused attempts too.
On S3 the roles also map to separate S3 credentials (hw-profiles/seaweedfs-iam.json), so the
storage itself refuses a recorder's read or delete even if this code were bypassed. A recorder
machine whose connection file holds only the recorder's credentials is authenticated by them
alone: it never reads the settings (its credentials may not), so it never sees a password hash
(sessions/archive/office.py, ``recorder_by_credentials``).
"""
from __future__ import annotations

import getpass
import hashlib
import hmac
import logging
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

log = logging.getLogger(__name__)

# scrypt cost (OWASP password storage cheat sheet): N = 2**17, r = 8, p = 1, i.e. 128 MiB and about
# 0.3-0.6 s per check on a small PC. The archive settings may ask for more (``password_cost``, the
# log2 of N), never for less than MIN_COST_LOG2.
DEFAULT_COST_LOG2, MIN_COST_LOG2, MAX_COST_LOG2 = 17, 14, 20
SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 8, 1, 32
SCRYPT_N = 1 << DEFAULT_COST_LOG2
MIN_PASSWORD = 8
MAX_NAME = 120

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
    """An authenticated person (or recorder account): ``name`` is the login, the rest is what the
    forms print."""

    name: str
    role: str
    full_name: str = ""
    position: str = ""
    inventory: str = ""

    @property
    def display_name(self) -> str:
        """The full name, never the login (a record made before names were kept shows the login)."""
        return self.full_name or self.name

    def may(self, action: str) -> bool:
        return self.role in PERMISSIONS.get(action, frozenset())

    def require(self, action: str) -> None:
        """Raise Refused naming the roles that may do ``action``."""
        if not self.may(action):
            allowed = ", ".join(sorted(PERMISSIONS.get(action, ()))) or "nobody"
            raise Refused(f"user {self.name!r} (role {self.role}) may not {action}; allowed roles: {allowed}")


def _maxmem(n: int, r: int) -> int:
    return 256 * n * r + (1 << 20)


def hash_password(password: str, cost_log2: int = DEFAULT_COST_LOG2) -> dict[str, Any]:
    """A new salted scrypt record for ``password`` at N = 2**cost_log2."""
    n = 1 << cost_log2
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=SCRYPT_LEN, maxmem=_maxmem(n, SCRYPT_R))
    return {"algorithm": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P,
            "salt": salt.hex(), "hash": digest.hex()}


def needs_rehash(record: Mapping[str, Any], cost_log2: int = DEFAULT_COST_LOG2) -> bool:
    """True when a stored hash is cheaper than the archive's cost (an older, weaker setting)."""
    try:
        return (record.get("algorithm") != "scrypt" or int(record["n"]) < (1 << cost_log2)
                or int(record["r"]) < SCRYPT_R or int(record["p"]) < SCRYPT_P)
    except (KeyError, ValueError, TypeError):
        return True


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
                         maxmem=_maxmem(n, r))
    return hmac.compare_digest(got, want)


def check_new_password(name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"password for {name!r} is too short: at least {MIN_PASSWORD} characters")
    if password.casefold() == name.casefold():
        raise UsageError(f"password for {name!r} must not be the user name")


def check_login(login: str) -> str:
    """A login is what people type: Latin letters, digits, '.', '-' and '_'."""
    if not login or len(login) > 64 or not login.isascii() \
            or not login.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"login {login!r}: use Latin letters, digits, '.', '-' and '_' (at most 64); the person's "
                         "full name goes into --name")
    return login


def check_full_name(full_name: str, option: str = "--name") -> str:
    """A full name as it is printed: any script, at least one letter, no control characters."""
    text = " ".join((full_name or "").split())
    if not text or not any(ch.isalpha() for ch in text) or len(text) > MAX_NAME:
        raise UsageError(f"{option} {full_name!r}: give the full name as it is to be printed on the journals "
                         f"(e.g. \"Марія Бондар\"; at most {MAX_NAME} characters)")
    return text


def new_user(name: str, role: str, password: str, full_name: str = "", position: str = "", inventory: str = "",
             cost_log2: int = DEFAULT_COST_LOG2) -> dict[str, Any]:
    """A user record for the settings: login, role, full name, position, for a recorder account its
    inventory number, and the password hash (each validated)."""
    if role not in ROLES:
        raise UsageError(f"role {role!r} is unknown; roles are {', '.join(ROLES)}")
    check_login(name)
    full = check_full_name(full_name)
    inv = " ".join(inventory.split())
    if role == "recorder" and not inv:
        raise UsageError(f"recorder account {name!r} needs --inventory: the device's inventory number, printed on "
                         "the uploads journal")
    check_new_password(name, password)
    return {"name": name, "role": role, "full_name": full, "position": " ".join(position.split()),
            "inventory": inv, "password": hash_password(password, cost_log2), "created_at": iso(utc_now()),
            "disabled": False}


def user_from_record(rec: Mapping[str, Any]) -> User:
    return User(name=str(rec["name"]), role=str(rec["role"]), full_name=str(rec.get("full_name") or ""),
                position=str(rec.get("position") or ""), inventory=str(rec.get("inventory") or ""))


def authenticate(settings: Settings, name: str, password: str) -> User:
    """The user if the password matches; AuthError (without saying which part was wrong) if not."""
    rec = settings.user(name)
    # Check a dummy hash for unknown users too, so timing does not reveal which names exist.
    stored = rec["password"] if rec else {"algorithm": "scrypt", "n": 1 << settings.password_cost,
                                          "r": SCRYPT_R, "p": SCRYPT_P, "salt": "00" * 16, "hash": "00" * SCRYPT_LEN}
    ok = check_password(stored, password)
    if not rec or not ok:
        raise AuthError(f"user {name!r}: unknown user or wrong password")
    if rec.get("disabled"):
        raise AuthError(f"user {name!r} is disabled; ask the responsible person (officer)")
    return user_from_record(rec)


def rehash_if_weak(settings: Settings, name: str, password: str) -> bool:
    """After a successful login: re-hash a password stored at a lower cost than the archive's.
    Returns True when the settings changed (the caller writes them)."""
    rec = settings.user(name)
    if rec is None or not needs_rehash(rec["password"], settings.password_cost):
        return False
    rec["password"] = hash_password(password, settings.password_cost)
    rec["rehashed_at"] = iso(utc_now())
    log.info("password of %s re-hashed at scrypt N=2^%d", name, settings.password_cost)
    return True


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
