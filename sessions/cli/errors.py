"""Which error means which exit code (sessions/exitcodes.py), and the one line that names it.

Commands let these errors rise; `examrec` (cli.app.main) and the archive commands' wrapper
(cli.archive_common.handles_errors) both turn them into a line on stderr and the exit code here.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys

from sessions import exitcodes


def _mapping() -> tuple[tuple[type[BaseException], int | None, str], ...]:
    """(error type, exit code, what the line says before the message); the first match wins.
    Imported when an error is reported, not by every command line that reports none."""
    from core.profile import ProfileError
    from sessions.archive.errors import ArchiveError
    from sessions.archive.workdays import HolidayError
    from sessions.evidence.layout import ManifestError
    from sessions.evidence.signing import KeyFileError
    return (
        (ArchiveError, None, ""),                 # each archive error carries its own exit_code
        (ProfileError, exitcodes.USAGE, "profile error: "),
        (HolidayError, exitcodes.USAGE, ""),
        (ManifestError, exitcodes.USAGE, ""),
        (KeyFileError, exitcodes.REFUSED, "device key: "),
        (KeyboardInterrupt, exitcodes.INTERRUPTED, ""),
    )


def report(prog: str, exc: BaseException) -> int | None:
    """Print the one line for ``exc`` (``examrec <prog>: ...``; nothing for Ctrl-C) and return
    its exit code; None, printing nothing, when ``exc`` is not one of ours."""
    for kind, code, prefix in _mapping():
        if isinstance(exc, kind):
            if not isinstance(exc, KeyboardInterrupt):
                print(f"{prog}: {prefix}{exc}", file=sys.stderr)
            return exc.exit_code if code is None else code  # type: ignore[attr-defined]
    return None
