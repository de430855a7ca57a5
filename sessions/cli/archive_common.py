"""Options and error handling shared by `examrec archive`, `examrec upload` and `examrec device`."""
from __future__ import annotations

import argparse
import functools
import json
import logging
from datetime import datetime, timezone
from typing import Any, Callable

from sessions.archive.errors import ArchiveError, UsageError
from sessions.archive.workdays import HolidayError
from sessions.cli.errors import report

log = logging.getLogger(__name__)


def add_access_options(p: argparse.ArgumentParser, old_flag: str | None = None) -> None:
    """--archive URL, --user, --archive-config: who works on which archive. ``old_flag`` is an
    older spelling of --archive that a command keeps accepting (upload's --to)."""
    p.add_argument("--archive", *((old_flag,) if old_flag else ()), dest="archive", metavar="URL",
                   help="the archive: file:///path or s3://bucket (default: $EXAMREC_ARCHIVE, the connection "
                        "file's `archive`, or the profile's upload.archive)")
    p.add_argument("--user", metavar="NAME", help="your archive user name (default: $EXAMREC_USER); the password "
                                                 "comes from $EXAMREC_PASSWORD or a prompt")
    p.add_argument("--archive-config", metavar="FILE",
                   help="connection file: S3 endpoint and credentials per role (default: $EXAMREC_ARCHIVE_CONFIG, "
                        "/etc/examrec/archive.toml, ~/.config/examrec/archive.toml)")


def parse_now(text: str | None) -> datetime | None:
    """--now ISO (date or date-time; a naive value is taken as UTC)."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--now {text!r}: write an ISO date or date-time, e.g. 2026-05-01 or "
                         "2026-05-01T08:00:00+02:00") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def handles_errors(prog: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Turn archive errors into a one-line message on stderr and their exit code."""
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(fn)
        def wrapper(args: argparse.Namespace) -> int:
            try:
                return fn(args)
            except (ArchiveError, HolidayError) as exc:
                code = report(f"examrec {prog}", exc)
                assert code is not None  # both are in cli.errors' mapping
                return code
        return wrapper
    return deco
