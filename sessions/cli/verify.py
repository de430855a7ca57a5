"""`examrec verify SESSION`: is the session complete and untouched? Exit 0 when it is, 1 with
every problem named (file, kind, detail) when it is not, 2 when SESSION is not a session."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sessions import exitcodes
from sessions.evidence import keystore
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
    p.add_argument("--trusted-keys", metavar="FILE",
                   help="without --public-key the key must be registered in this key store (default: "
                        "$EXAMREC_TRUSTED_KEYS, /etc/examrec/trusted-keys, ~/.config/examrec/trusted-keys)")
    p.set_defaults(func=run)


def _print_text(report: VerifyReport) -> None:
    c = report.counts
    print(f"session {report.session} (state {report.state or 'unknown'})")
    cp = report.checkpoint
    if cp and cp.get("type") == "heads":
        frags = ", ".join(f"{s} {h.get('lines')}" for s, h in (cp.get("fragments") or {}).items() if isinstance(h, dict))
        print(f"last signed checkpoint {cp['seq']} at pts {cp.get('pts_s')} s covers events 1-"
              f"{(cp.get('events') or {}).get('lines')}; fragment records: {frags or 'none'}")
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
    trusted = True
    if expected is None and report.public_key:
        # A valid signature by any key proves nothing: anybody can make a key. It must be one
        # the office registered for a recorder (sessions/evidence/keystore.py).
        try:
            store = keystore.load(Path(args.trusted_keys) if args.trusted_keys else None)
        except keystore.KeyStoreError as exc:
            print(f"examrec verify: {exc}", file=sys.stderr)
            return exitcodes.USAGE
        known = store.get(report.public_key)
        known = known if known is not None and known.may_sign("recorder") else None
        trusted = known is not None
        report.trusted_as = known.name if known else None
    if args.json:
        print(json.dumps({**report.to_json(), "trusted": trusted}, ensure_ascii=False, indent=2))
    else:
        _print_text(report)
        if report.trusted_as:
            print(f"the key is registered as {report.trusted_as}")
        if not trusted:
            print(f"UNTRUSTED: signed by an unregistered key {fingerprint(report.public_key)}; compare it with the "
                  "fingerprint the records office registered for the recorder, then `examrec key --register`")
    return exitcodes.OK if report.ok and trusted else exitcodes.FAILED
