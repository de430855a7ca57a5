"""The `examrec` command line. Each command lives in its own module exposing ``register(sub)``,
which adds a sub-parser whose ``func(args) -> int`` does the work and returns an exit code."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sessions import exitcodes
from sessions.cli.errors import report
from sessions.evidence.software import version_text

# Modules that add commands, in the order they appear in `examrec --help`.
COMMAND_MODULES = (
    "sessions.cli.record",
    "sessions.cli.serve",
    "sessions.cli.start",
    "sessions.cli.check",
    "sessions.cli.control",
    "sessions.cli.repair",
    "sessions.cli.verify",
    "sessions.cli.key",
    "sessions.cli.export_gpx",
    "sessions.cli.view",
    "sessions.cli.devices",
    "sessions.cli.upload",
    "sessions.cli.archive",
    "sessions.cli.device",
)


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes get one line naming the problem and where the help is, and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(exitcodes.USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


class _VersionAction(argparse.Action):
    """--version: examrec's, PyAV's and FFmpeg's versions (PyAV is loaded only when asked)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print examrec's, PyAV's and FFmpeg's versions and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit(exitcodes.OK)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="examrec",
        description="Record exam and inspection sessions: every camera, the sound, GPS and pedals on one "
                    "timeline, in crash-safe fragmented MP4, with verifiable evidence.",
        epilog=f"Exit codes: {exitcodes.OK} ok, {exitcodes.FAILED} problem found, {exitcodes.USAGE} usage or profile "
               f"error, {exitcodes.REFUSED} refused, {exitcodes.DISK_FULL} disk full, {exitcodes.INTERRUPTED} interrupted, "
               f"{exitcodes.UNREACHABLE} unreachable.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return exitcodes.OK
    try:
        return int(args.func(args))
    except BaseException as exc:  # noqa: BLE001 - only our errors become a code; others re-raise
        code = report("examrec", exc)
        if code is None:
            raise
        return code


if __name__ == "__main__":
    sys.exit(main())
