"""`examrec start`: start an exam on the running recorder service (`examrec serve`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sessions import exitcodes
from sessions.cli.control import _socket, _socket_args
from sessions.cli.record import EXAM_TYPES, DetailsError, session_details
from sessions.recorder.checks import CheckResult, results_table
from sessions.recorder.control import NoRecorder, request

START_TIMEOUT_S = 120.0  # devices open and the pre-exam checks run before the answer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("start", help="start an exam on the recorder service",
                       description="Start an exam for a candidate on the running `examrec serve`: the devices open, "
                                   "the pre-exam checks run, the notice shows, recording starts. Examiner, plate "
                                   "and centre default to the service's settings. Prints the session folder.")
    p.add_argument("--candidate", help="candidate's full name (required, here or in --details)")
    p.add_argument("--candidate-id", help="candidate's ID (document or application number)")
    p.add_argument("--examiner", help="examiner's full name")
    p.add_argument("--plate", help="vehicle's plate")
    p.add_argument("--centre", help="exam centre")
    p.add_argument("--exam", choices=EXAM_TYPES, help="exam type")
    p.add_argument("--details", type=Path, metavar="FILE.json", help="the details as a JSON object")
    p.add_argument("--force", action="store_true", help="start even when a mandatory check fails (logged)")
    _socket_args(p)
    p.set_defaults(func=cmd_start)


def cmd_start(args: argparse.Namespace) -> int:
    try:
        details = session_details(args)
    except DetailsError as exc:
        print(f"examrec: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if not details.get("candidate"):
        print("examrec: an exam needs the candidate's name: --candidate \"FULL NAME\"", file=sys.stderr)
        return exitcodes.USAGE
    try:
        answer = request(_socket(args), {"cmd": "start", "details": details, "force": args.force},
                         timeout=START_TIMEOUT_S)
    except NoRecorder as exc:
        print(f"examrec: {exc} (is `examrec serve` running?)", file=sys.stderr)
        return exitcodes.UNREACHABLE
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
    if not answer.get("ok"):
        print(f"examrec: refused: {answer.get('error')}", file=sys.stderr)
        return exitcodes.REFUSED
    if not args.json:
        checks = [CheckResult(**c) for c in answer.get("checks", [])]
        if checks:
            print(results_table(checks), file=sys.stderr)
        print(f"recording: {answer['session']}")
    return exitcodes.OK
