"""Errors of the archive, each carrying the exit code the CLI returns (sessions/exitcodes.py)."""
from __future__ import annotations

from sessions import exitcodes


class ArchiveError(Exception):
    """Something went wrong against the archive; the message says what and what to do."""

    exit_code = exitcodes.FAILED


class UsageError(ArchiveError):
    """A user mistake: bad argument, unknown session, missing setting."""

    exit_code = exitcodes.USAGE


class NotInitialised(UsageError):
    """The archive URL points at nothing prepared by `examrec archive init`."""


class Refused(ArchiveError):
    """Refused by the rules: role, password, retention lock, legal hold, the 30-day limit."""

    exit_code = exitcodes.REFUSED


class AuthError(Refused):
    """Unknown user or wrong password."""


class Unreachable(ArchiveError):
    """The archive could not be reached (network, endpoint down, folder not mounted)."""

    exit_code = exitcodes.UNREACHABLE


class IntegrityError(ArchiveError):
    """Stored bytes differ from what the manifest or the receipt says."""

    exit_code = exitcodes.FAILED


class ChecksumMismatch(IntegrityError):
    """An object's bytes did not match the SHA-256 it was sent with; nothing was stored."""


class AlreadyExists(ArchiveError):
    """A create-only write found the key already present (an earlier, interrupted attempt)."""


class MediumFull(ArchiveError):
    """The medium a copy is written to has no room for it; what was written of it is removed."""

    exit_code = exitcodes.DISK_FULL
