"""`examrec verify SESSION`: is the session complete and untouched? Exit 0 when it is, 1 with
every problem named (file, kind, detail) when it is not, 2 when SESSION is not a session."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sessions import exitcodes
from sessions.evidence.signing import fingerprint, load_public_key
from sessions.evidence.nofollow import SymlinkRefused
from sessions.evidence.verify import BAD_SIGNATURE, INTERRUPTED, NotASession, VerifyReport, verify_session

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="check a session is complete and untouched",
        description="Check a session folder: signature, segment hashes and their chain, every fragment "
                    "record, events, photos, telemetry, and files nobody listed. Exit 0: complete and "
                    "untouched. Exit 1: each problem by file and kind (an interrupted session is "
                    "reported with how far it verifies). Exit 2: not a session.")
    p.add_argument("session", metavar="SESSION", help="session folder (or its manifest.json)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--public-key", metavar="FILE",
                   help="the signature must be by this key (PEM or hex, as `examrec key --export` writes)")
    p.set_defaults(func=run)


def _print_text(report: VerifyReport) -> None:
    c = report.counts
    print(f"session {report.session} (state {report.state or 'unknown'})")
    summary = (f"verified: {c['segments']}/{c['segments_total']} segments, {c['fragments']} fragment records, "
               f"{c['events']} events, {c['photos']} photos")
    if report.signed_by:
        signed = f"signed by key {report.signed_by}"
    elif any(p.kind == BAD_SIGNATURE for p in report.problems):
        signed = "signature not valid"
    else:
        signed = "not signed"
    if report.ok:
        print(f"OK: complete and untouched ({summary}; {signed})")
        return
    for p in report.problems:
        print(p)
    if report.untouched:
        print(f"NOT COMPLETE: interrupted, no sign of tampering ({summary}; {signed})")
    else:
        bad = sum(1 for p in report.problems if p.kind != INTERRUPTED)
        print(f"FAILED: {bad} problem{'s' if bad != 1 else ''} ({summary}; {signed})")


def run(args: argparse.Namespace) -> int:
    expected = None
    if args.public_key:
        try:
            expected = load_public_key(Path(args.public_key).read_bytes())
        except (OSError, ValueError) as exc:
            print(f"examrec verify: cannot use public key {args.public_key}: {exc}", file=sys.stderr)
            return exitcodes.USAGE
        log.info("expecting signature by key %s", fingerprint(expected))
    try:
        report = verify_session(args.session, expected_public_key=expected)
    except NotASession as exc:
        print(f"examrec verify: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except SymlinkRefused as exc:
        print(f"examrec verify: refused: {exc}", file=sys.stderr)
        return exitcodes.REFUSED
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        _print_text(report)
    return exitcodes.OK if report.ok else exitcodes.FAILED
