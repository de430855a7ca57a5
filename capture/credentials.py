"""Camera credentials: where they come from, and keeping them out of every message and log.

A profile never holds a password. ``credentials = "ENV:VARNAME"`` reads ``user:password`` from
the environment (systemd's ``EnvironmentFile=``, mode 0600), any other value is the path of a
file holding ``user:password`` on its first non-empty line, which must not be readable by the
group or others. Every message a camera source produces goes through :func:`redact` so neither
the password nor a URL's user-info part ever reaches the event log, the journal or the screen.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

# scheme://user:pass@host -> scheme://***@host, for URLs we did not build ourselves
# (error text from FFmpeg, a password someone put straight into the profile).
_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")


class CredentialsError(Exception):
    """The credentials a profile names cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password. ``repr`` never shows the password."""

    user: str
    password: str = field(repr=False)

    def secrets(self) -> list[str]:
        """Every spelling of the secret that could appear in a message (plain and URL-encoded)."""
        out = {self.password, quote(self.password, safe=""), quote(self.password)}
        return sorted((s for s in out if s), key=len, reverse=True)


def parse_user_password(text: str, where: str) -> Credentials:
    """``user:password`` (the password may itself contain ':') from the first non-empty line."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    user, sep, password = line.partition(":")
    if not sep or not user:
        raise CredentialsError(f"{where} must hold one line 'user:password'")
    return Credentials(user=user, password=password)


def load_credentials(value: str | None, base_dir: Path | None = None, camera: str = "camera") -> Credentials | None:
    """Resolve a profile's ``credentials`` value; ``None`` when the camera needs none.

    Raises :class:`CredentialsError` with a plain message (never containing the secret) when the
    variable is unset, the file is missing, unreadable, or readable by the group or others.
    """
    if not value:
        return None
    if value.startswith("ENV:"):
        var = value[4:]
        if not var:
            raise CredentialsError(f"{camera}: credentials = 'ENV:' needs a variable name, e.g. ENV:EXAMREC_CAM_CABIN")
        text = os.environ.get(var)
        if text is None:
            raise CredentialsError(
                f"{camera}: credentials variable {var} is not set: put {var}=user:password in the service's "
                f"EnvironmentFile (mode 0600)")
        return parse_user_password(text, f"{camera}: credentials variable {var}")
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CredentialsError(f"{camera}: credentials file {path} not found") from None
    except OSError as exc:
        raise CredentialsError(f"{camera}: credentials file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"{camera}: credentials file {path} is not a regular file")
    # Refuse before reading: a password others can read is already leaked, and using it
    # silently would make the recorder part of that.
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{camera}: credentials file {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"run `chmod 600 {path}` and keep it owned by the recorder's user")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(f"{camera}: credentials file {path} cannot be read: {exc.strerror}") from None
    return parse_user_password(text, f"{camera}: credentials file {path}")


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with every URL's user-info and each given secret replaced by ``***``."""
    out = _USERINFO_RE.sub(lambda m: m.group("scheme") + "***@", text)
    for s in sorted(secrets, key=len, reverse=True):
        if s:
            out = out.replace(s, "***")
    return out


def strip_userinfo(url: str) -> tuple[str, Credentials | None]:
    """Split ``scheme://user:pass@host/...`` into the URL without user-info and its credentials."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    creds = Credentials(unquote(parts.username), unquote(parts.password or ""))
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), creds


def with_userinfo(url: str, creds: Credentials | None) -> str:
    """The URL with ``user:password@`` inserted (percent-encoded), for libraries that want it there."""
    if creds is None:
        return url
    parts = urlsplit(url)
    userinfo = quote(creds.user, safe="") + ":" + quote(creds.password, safe="")
    return urlunsplit((parts.scheme, f"{userinfo}@{parts.netloc}", parts.path, parts.query, parts.fragment))
