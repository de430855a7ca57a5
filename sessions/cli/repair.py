"""`examrec repair`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sessions import exitcodes
from sessions.evidence.layout import find_sessions
from sessions.evidence.repair import RepairRefused, needs_repair, repair_session


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("repair", help="make an interrupted session playable and its manifest honest",
                       description="Repair sessions that ended without a clean stop (kill, power cut, full disk): "
                                   "trim each torn segment tail back to the last complete fragment (the bytes go to "
                                   "recovered/, never deleted), rebuild the manifest from the files and the event "
                                   "log, and mark the session interrupted. Idempotent. Give a session folder or an "
                                   "output root (every interrupted session under it is repaired).")
    p.add_argument("paths", nargs="+", type=Path, metavar="SESSION_OR_ROOT")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(func=cmd_repair)


def repair_interrupted(root: Path) -> list:
    """Repair every session under ``root`` left without a clean stop (used by `record` at start)."""
    reports = []
    for session in find_sessions(root):
        if needs_repair(session):
            try:
                reports.append(repair_session(session))
            except RepairRefused as exc:
                print(f"examrec: warning: {exc}", file=sys.stderr)
    return reports


def cmd_repair(args: argparse.Namespace) -> int:
    reports, code = [], exitcodes.OK
    for root in args.paths:
        sessions = find_sessions(root)
        if not sessions:
            print(f"examrec: {root}: no session here (expected a session folder or <out>/<date>/<session>)", file=sys.stderr)
            code = max(code, exitcodes.USAGE)
            continue
        for session in sessions:
            try:
                report = repair_session(session)
            except RepairRefused as exc:
                print(f"examrec: {exc}", file=sys.stderr)
                code = max(code, exitcodes.REFUSED)
                continue
            reports.append(report)
            if not args.json:
                if report.repaired:
                    print(f"{session}: repaired, state {report.state}, last frame kept at {report.last_pts_s} s")
                    for t in report.trims:
                        print(f"  {t.file}: {t.reason}; kept {t.kept_bytes} bytes, {t.trimmed_bytes} set aside in {t.saved_as}")
                else:
                    print(f"{session}: {'; '.join(report.notes) or 'nothing to do'}")
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2, ensure_ascii=False))
    return code
