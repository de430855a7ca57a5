"""Where the archive is and how to reach it.

Three things, kept apart on purpose:

* the **archive URL**: ``file:///srv/examrec/archive`` (a local or mounted folder) or
  ``s3://bucket`` (any S3-compatible store with Object Lock). Given by ``--archive`` (``--to`` for init and upload, the old spelling), else
  $EXAMREC_ARCHIVE, else ``archive = ...`` in the connection file, else the profile's
  ``upload.archive``.
* the **connection file** (TOML, on each machine; never inside the archive): the S3 endpoint and
  one set of S3 credentials per role this machine may use. Path: ``--archive-config``, else
  $EXAMREC_ARCHIVE_CONFIG, else /etc/examrec/archive.toml or ~/.config/examrec/archive.toml when
  present. Without credentials for a role, boto3's standard chain is used (AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ~/.aws/...).
* the **archive settings** (``examrec/config.json`` inside the archive, written by ``archive init``
  and the ``archive user`` commands): users with scrypt password hashes and roles, the centre's
  name, its holidays, how long journals are kept. The same for every machine that uses the archive.

Example connection file::

    archive = "s3://examrec"
    [s3]
    endpoint_url = "http://127.0.0.1:8333"
    region = "us-east-1"
    [s3.credentials.officer]
    access_key_id = "examrec-officer"
    secret_access_key_file = "/etc/examrec/officer.secret"   # or secret_access_key = "..."
"""
from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlparse

from sessions.archive.errors import Refused, UsageError
from sessions.archive.workdays import WorkCalendar

ENV_ARCHIVE = "EXAMREC_ARCHIVE"
ENV_CONFIG = "EXAMREC_ARCHIVE_CONFIG"
DEFAULT_CONFIG_PATHS = (Path("/etc/examrec/archive.toml"), Path("~/.config/examrec/archive.toml"))
SETTINGS_KEY = "examrec/config.json"
SETTINGS_FORMAT = "examrec-archive/1"
ROLES = ("recorder", "officer", "head")
CREDENTIAL_ROLES = ROLES + ("admin",)
DEFAULT_JOURNAL_YEARS = 10


@dataclass(frozen=True)
class ArchiveURL:
    """A parsed archive URL: scheme 'file' with an absolute path, or 's3' with a bucket."""

    scheme: str
    path: Path | None = None
    bucket: str | None = None

    def __str__(self) -> str:
        return f"file://{self.path}" if self.scheme == "file" else f"s3://{self.bucket}"


def parse_url(text: str) -> ArchiveURL:
    """Parse ``file:///abs/path`` or ``s3://bucket``; anything else is a usage error that says
    what is accepted."""
    if not text or not text.strip():
        raise UsageError("no archive given: use --archive URL (file:///path or s3://bucket), set "
                         f"${ENV_ARCHIVE}, or put archive = \"...\" in the connection file")
    u = urlparse(text.strip())
    if u.scheme == "file":
        if u.netloc not in ("", "localhost"):
            raise UsageError(f"archive URL {text!r}: a file URL needs an absolute path, e.g. file:///srv/examrec/archive")
        p = Path(unquote(u.path))
        if not p.is_absolute():
            raise UsageError(f"archive URL {text!r}: the path must be absolute, e.g. file:///srv/examrec/archive")
        return ArchiveURL("file", path=p)
    if u.scheme == "s3":
        bucket = u.netloc
        if not bucket or (u.path not in ("", "/")):
            raise UsageError(f"archive URL {text!r}: write s3://BUCKET (a whole bucket is one archive; no key prefix)")
        if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in "-." for c in bucket):
            raise UsageError(f"archive URL {text!r}: {bucket!r} is not a valid bucket name "
                             "(3-63 lowercase letters, digits, '-' and '.')")
        return ArchiveURL("s3", bucket=bucket)
    raise UsageError(f"archive URL {text!r}: unknown scheme {u.scheme or '(none)'!r}; use file:///path or s3://bucket")


# --- connection file -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


@dataclass
class ConnectionConfig:
    """The machine-local connection file (may be empty: defaults and the AWS environment)."""

    path: Path | None = None
    archive: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    credentials: dict[str, Credentials] = field(default_factory=dict)

    def credentials_for(self, role: str) -> Credentials | None:
        return self.credentials.get(role)


def _cfg_error(path: Path, key: str, msg: str) -> UsageError:
    return UsageError(f"{path}: {key}: {msg}")


def load_connection(path: str | os.PathLike[str] | None = None,
                    environ: Mapping[str, str] | None = None) -> ConnectionConfig:
    """Read the connection file named by ``path`` or $EXAMREC_ARCHIVE_CONFIG or a default place;
    no file at all gives an empty config (a file:// archive needs none)."""
    env = os.environ if environ is None else environ
    chosen: Path | None = Path(path).expanduser() if path else None
    if chosen is None and env.get(ENV_CONFIG):
        chosen = Path(env[ENV_CONFIG]).expanduser()
    if chosen is None:
        for p in DEFAULT_CONFIG_PATHS:
            if p.expanduser().is_file():
                chosen = p.expanduser()
                break
    if chosen is None:
        return ConnectionConfig()
    try:
        raw = tomllib.loads(chosen.read_text(encoding="utf-8"))
        file_mode = stat.S_IMODE(chosen.stat().st_mode)
    except FileNotFoundError:
        raise UsageError(f"{chosen}: archive connection file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{chosen}: not valid TOML: {exc}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(f"{chosen}: not a readable TOML file ({str(exc)[:80]})") from None
    except OSError as exc:
        raise UsageError(f"{chosen}: cannot be read ({exc.strerror or exc})") from None
    allowed_top = {"archive", "s3"}
    for k in raw:
        if k not in allowed_top:
            raise _cfg_error(chosen, k, f"unknown key; allowed: {', '.join(sorted(allowed_top))}")
    cfg = ConnectionConfig(path=chosen, archive=raw.get("archive"))
    s3 = raw.get("s3") or {}
    if not isinstance(s3, dict):
        raise _cfg_error(chosen, "s3", "must be a table [s3]")
    for k in s3:
        if k not in ("endpoint_url", "region", "credentials"):
            raise _cfg_error(chosen, f"s3.{k}", "unknown key; allowed: endpoint_url, region, credentials")
    cfg.endpoint_url = s3.get("endpoint_url")
    cfg.region = s3.get("region")
    for role, c in (s3.get("credentials") or {}).items():
        key = f"s3.credentials.{role}"
        if role not in CREDENTIAL_ROLES:
            raise _cfg_error(chosen, key, f"unknown role; roles are {', '.join(CREDENTIAL_ROLES)}")
        if not isinstance(c, dict) or "access_key_id" not in c:
            raise _cfg_error(chosen, key, "needs access_key_id and secret_access_key (or secret_access_key_file)")
        secret = c.get("secret_access_key")
        if secret is None and c.get("secret_access_key_file"):
            sp = Path(c["secret_access_key_file"]).expanduser()
            if not sp.is_absolute():
                sp = chosen.parent / sp
            try:
                mode = stat.S_IMODE(sp.stat().st_mode)
                secret = sp.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise _cfg_error(chosen, f"{key}.secret_access_key_file", f"cannot read {sp}: {exc.strerror}") from None
            if mode & 0o077:
                raise Refused(f"{chosen}: {key}.secret_access_key_file: {sp} is readable by others "
                              f"(mode {mode:04o}); run: chmod 600 {sp}")
        elif secret is not None and file_mode & 0o077:
            # The secret is in this file itself: like the device key, it must be the owner's alone.
            raise Refused(f"{chosen}: holds S3 secrets and is readable by others (mode {file_mode:04o}); "
                          f"run: chmod 600 {chosen}")
        if not secret:
            raise _cfg_error(chosen, key, "needs secret_access_key or secret_access_key_file")
        cfg.credentials[role] = Credentials(str(c["access_key_id"]), str(secret))
    return cfg


def resolve_archive(explicit: str | None, conn: ConnectionConfig, profile_archive: str | None = None,
                    environ: Mapping[str, str] | None = None) -> ArchiveURL:
    """The archive URL from the first place that names one (see the module docstring)."""
    env = os.environ if environ is None else environ
    text = explicit or env.get(ENV_ARCHIVE) or conn.archive or profile_archive
    return parse_url(text or "")


# --- archive settings (inside the archive) -----------------------------------------------------

@dataclass
class Settings:
    """``examrec/config.json``: who may use the archive, the centre and its calendar.

    ``timezone`` is the centre's zone (IANA name, e.g. Europe/Kyiv) in which forms print times;
    empty means the zone of the machine that prints. ``holiday_country`` (UA, KZ or empty) seeds
    the public holidays from the `holidays` package; ``holidays`` adds the centre's own days off
    and ``working_days`` the days worked although they are weekends or holidays (a worked
    Saturday). ``responsible`` is the login of the responsible person the forms name (UA V.1,
    KZ 6). ``password_cost`` is log2 of scrypt's N for new and re-hashed passwords.
    """

    centre: str = ""
    holidays: list[str] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    journal_retention_years: int = DEFAULT_JOURNAL_YEARS
    created_at: str = ""
    format: str = SETTINGS_FORMAT
    timezone: str = ""
    holiday_country: str = ""
    working_days: list[str] = field(default_factory=list)
    responsible: str = ""
    password_cost: int = 17

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "created_at": self.created_at, "centre": self.centre,
                "timezone": self.timezone, "holiday_country": self.holiday_country,
                "holidays": sorted(self.holidays), "working_days": sorted(self.working_days),
                "journal_retention_years": self.journal_retention_years, "responsible": self.responsible,
                "password_cost": self.password_cost, "users": self.users}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> "Settings":
        if not isinstance(data, Mapping) or data.get("format") != SETTINGS_FORMAT:
            raise UsageError(f"{where}: not examrec archive settings (format {SETTINGS_FORMAT}); "
                             "was the archive created by another program?")
        return cls(centre=str(data.get("centre") or ""), holidays=list(data.get("holidays") or []),
                   users=list(data.get("users") or []),
                   journal_retention_years=int(data.get("journal_retention_years") or DEFAULT_JOURNAL_YEARS),
                   created_at=str(data.get("created_at") or ""), timezone=str(data.get("timezone") or ""),
                   holiday_country=str(data.get("holiday_country") or ""),
                   working_days=list(data.get("working_days") or []),
                   responsible=str(data.get("responsible") or ""),
                   # Archives made before the cost was a setting used 2**14: their hashes are
                   # re-hashed at today's cost on each person's next login.
                   password_cost=int(data.get("password_cost") or 17))

    def user(self, name: str) -> dict[str, Any] | None:
        return next((u for u in self.users if u.get("name") == name), None)

    def full_name(self, login: str | None) -> str:
        """The full name the forms print for a login (the login itself only when unknown)."""
        rec = self.user(login or "")
        return str((rec or {}).get("full_name") or login or "")

    def device_name(self, inventory: str | None) -> str:
        """The name of the recorder account that carries this inventory number ('' if none)."""
        rec = next((u for u in self.users if inventory and u.get("inventory") == inventory), None)
        return str((rec or {}).get("full_name") or "")

    def responsible_person(self) -> dict[str, Any] | None:
        """The responsible person named on the forms: the ``responsible`` login, else the first
        enabled officer."""
        rec = self.user(self.responsible) if self.responsible else None
        return rec or next((u for u in self.users if u.get("role") == "officer" and not u.get("disabled")), None)

    def holiday_dates(self) -> list[date]:
        return [date.fromisoformat(h) for h in self.holidays]

    def calendar(self) -> "WorkCalendar":
        """The centre's working days (public holidays of ``holiday_country``, own holidays, worked days)."""
        return WorkCalendar.from_settings(self.holidays, self.working_days, self.holiday_country)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    """ISO-8601 UTC with seconds and 'Z', the form every journal entry uses."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
