"""`examrec export-gpx SESSION`: the session's route as GPX 1.1, rebuilt from telemetry.jsonl (CAP-5)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sensors.gpx import GpxError, NoTelemetry, export_gpx, session_gpx

from sessions import exitcodes


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export-gpx`` command."""
    p = sub.add_parser(
        "export-gpx", help="export a session's route and speed as GPX 1.1",
        description="Rebuild a session's route (GPS fixes with time, speed and course) as a GPX 1.1 file "
                    "from its telemetry.jsonl. Without --out the session's own route.gpx is rebuilt only "
                    "when it is missing or damaged (after a crash); an intact one stays as recorded.")
    p.add_argument("session", metavar="SESSION", help="the session folder (<out>/<date>/<session_id>)")
    p.add_argument("--out", metavar="FILE", help="write the GPX here instead ('-' for standard output)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export; exit 0 when a route was written (or an intact one kept), 1 when there is no fix
    to export, 2 when SESSION is not a session folder."""
    sdir = Path(args.session)
    if not sdir.is_dir():
        return _fail(args, exitcodes.USAGE, f"{sdir}: no such session folder (give the path of the "
                                            f"session's folder, e.g. recordings/2025-05-15/<session_id>)")
    try:
        if args.out == "-":
            text, track = session_gpx(sdir)
            sys.stdout.write(text)
            return exitcodes.OK
        summary = export_gpx(sdir, Path(args.out) if args.out else None)
    except NoTelemetry as exc:
        return _fail(args, exitcodes.USAGE, str(exc))
    except (GpxError, OSError) as exc:
        return _fail(args, exitcodes.FAILED, str(exc))
    result = {"session": str(sdir), "out": summary.path, "action": summary.action, "points": summary.points,
              "segments": summary.segments, "first_time": summary.first_time, "last_time": summary.last_time,
              "skipped": summary.skipped, "notes": summary.notes}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"{summary.path}: {summary.action}, {summary.points} points in {summary.segments} segment(s), "
              f"{summary.first_time} .. {summary.last_time}")
        for note in summary.notes:
            print(f"  {note}")
    return exitcodes.OK


def _fail(args: argparse.Namespace, code: int, message: str) -> int:
    if args.json:
        print(json.dumps({"error": message, "exit_code": code}, ensure_ascii=False))
    print(f"examrec export-gpx: {message}", file=sys.stderr)
    return code
