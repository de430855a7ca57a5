"""The `examrec` command line. Each command lives in its own module exposing ``register(sub)``,
which adds a sub-parser whose ``func(args) -> int`` does the work and returns an exit code."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sessions import exitcodes
from sessions.cli.errors import report

# Each command and the module that adds it (``register(sub)``), in the order of `examrec --help`.
# A command line builds the parser of its own command only: importing every command module (the
# recorder, the records office, the forms) cost `examrec pause` about a second on a busy machine.
COMMANDS: dict[str, str] = {
    "record": "sessions.cli.record", "info": "sessions.cli.record",
    "serve": "sessions.cli.serve",
    "start": "sessions.cli.start",
    "check": "sessions.cli.check",
    "status": "sessions.cli.control", "pause": "sessions.cli.control", "resume": "sessions.cli.control",
    "stop": "sessions.cli.control", "photo": "sessions.cli.control",
    "repair": "sessions.cli.repair",
    "verify": "sessions.cli.verify",
    "key": "sessions.cli.key",
    "export-gpx": "sessions.cli.export_gpx",
    "view": "sessions.cli.view",
    "devices": "sessions.cli.devices",
    "upload": "sessions.cli.upload",
    "archive": "sessions.cli.archive",
    "device": "sessions.cli.device", "equipment": "sessions.cli.device",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


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
        from sessions.evidence.software import version_text
        print(version_text())
        parser.exit(exitcodes.OK)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command`` (one of COMMANDS) only that command's module is
    imported and registered, which is all that parsing its arguments needs."""
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
    for name in (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    # The top-level options take no value, so the first word that is not an option is the command.
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
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
