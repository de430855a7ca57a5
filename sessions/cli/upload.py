"""`examrec upload`: move finished and interrupted sessions into the archive (ST-1; UA IV.1, KZ 11).

    examrec upload [SESSION...] --archive URL [--json] upload (default: every session under --out)
    examrec upload --watch [--interval S]             keep uploading when the archive is reachable
                                                      (body-worn: only on the charger)
    examrec upload --overdue [--now ISO]              sessions not uploaded by the end of the next
                                                      working day (no archive access needed)

Each session is verified, uploaded object by object (segments first, manifest last) with its
SHA-256 checked by the storage, journaled, and only then deleted from the recorder. A cut
connection or a power loss resumes where it stopped. Exit codes: 0 all uploaded (or nothing to
do), 1 a session failed verification or transfer (it stays on the recorder), 2 usage, 3 refused
(role, password, a named session that cannot be uploaded yet), 6 archive unreachable;
with --overdue: 0 none overdue, 1 some overdue.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sessions import exitcodes
from sessions.archive.access import resolve_user
from sessions.cli.archive_common import add_access_options, handles_errors, parse_now, print_json
from sessions.evidence.layout import sessions_under
from sessions.archive.config import utc_now
from sessions.archive.office import open_archive
from sessions.archive.upload import (Progress, Uploader, WatchRound, on_charger, overdue_sessions,
                             resolve_sessions, upload_all, watch)
from sessions.archive.workdays import WorkCalendar
from core.profile import Profile, chosen_profile_path, load_profile



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upload", help="upload finished and interrupted sessions to the archive",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sessions", nargs="*", metavar="SESSION",
                   help="session folders or ids (default: every session under --out)")
    add_access_options(p, old_flag="--to")     # --to: the old spelling, kept for scripts
    p.add_argument("--out", type=Path, help="recordings root (default: the profile's `out`)")
    p.add_argument("--profile", type=Path, help=f"hardware profile: retention, upload settings "
                                                f"(default: $EXAMREC_PROFILE, else /etc/examrec/profile.toml)")
    p.add_argument("--device", metavar="INVENTORY", help="this recorder's inventory number for the journal "
                                                        "(default: $EXAMREC_DEVICE, else the inventory number "
                                                        "of the recorder account)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--watch", action="store_true", help="keep uploading whenever the archive is reachable")
    p.add_argument("--interval", type=float, default=60.0, metavar="S", help="seconds between --watch rounds")
    p.add_argument("--on-charge-only", action="store_true",
                   help="with --watch: only while on the charger (default for body-worn profiles)")
    p.add_argument("--power-supply-root", type=Path, metavar="DIR",
                   help="where the power supplies are reported (default /sys/class/power_supply)")
    p.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    p.add_argument("--test-session", action="store_true",
                   help="accept DEMO sessions (recorded from a replay profile) as tests; without it they are refused")
    p.add_argument("--overdue", action="store_true", help="list sessions past the upload deadline and exit")
    p.add_argument("--now", metavar="ISO", help="with --overdue: judge at this time (default: now)")
    p.add_argument("--holiday", action="append", default=[], metavar="YYYY-MM-DD",
                   help="with --overdue: a holiday besides the profile's upload.holidays (repeatable)")
    p.set_defaults(func=cmd_upload)


def _profile(args: argparse.Namespace) -> Profile:
    return load_profile(chosen_profile_path(args.profile))


@handles_errors("upload")
def cmd_upload(args: argparse.Namespace) -> int:
    profile = _profile(args)
    out = args.out or profile.resolve(profile.out)
    up = profile.section("upload")
    if args.overdue:
        return _overdue(args, out, WorkCalendar.from_settings(list(up.get("holidays") or []) + list(args.holiday),
                                                              up.get("working_days"), up.get("holiday_country")))
    months = {profile.name: int(profile.section("retention")["months"])}
    user = resolve_user(args.user)

    def open_uploader() -> tuple[Uploader, object]:
        ctx = open_archive(args.archive, user_name=user, command="upload", action="upload",
                           conn_path=args.archive_config, profile_archive=up.get("archive"))
        try:
            uploader = Uploader(ctx, profile_months=months, device=args.device, progress=Progress(),
                                test_sessions=args.test_session)
        except Exception as exc:
            ctx.close(exc)
            raise
        return uploader, ctx

    if args.watch:
        charge_only = args.on_charge_only or bool(up.get("on_charge_only")) or profile.kind == "body-worn"

        def opener():
            uploader, ctx = open_uploader()
            return uploader, lambda: ctx.close()

        def report(r: WatchRound) -> None:
            line = {"at": r.at.isoformat(timespec="seconds"), "action": r.action, "message": r.message,
                    "results": [x.to_json() for x in r.results]}
            if args.json:
                print(json.dumps(line, ensure_ascii=False), flush=True)
            elif r.action != "nothing":
                print(f"{line['at']} {r.action} {r.message}", file=sys.stderr, flush=True)
                for x in r.results:
                    print(f"  {x.status:9} {x.session_id}: {x.message}", file=sys.stderr, flush=True)

        if charge_only and on_charger(args.power_supply_root) is None:
            print("upload --watch: this machine reports no power supply; uploading as if on mains", file=sys.stderr)
        watch(opener, out, interval_s=args.interval, on_charge_only=charge_only, power_root=args.power_supply_root,
              rounds=args.rounds, report=report)
        return exitcodes.OK

    explicit = bool(args.sessions)
    sessions = resolve_sessions(args.sessions, out) if explicit else sessions_under(out)
    uploader, ctx = open_uploader()
    with ctx:
        ctx.target = ",".join(p.name for p in sessions[:20]) + ("..." if len(sessions) > 20 else "")
        results = upload_all(uploader, sessions)
        counts: dict[str, int] = {}
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
        ctx.detail = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    if args.json:
        print_json({"archive": ctx.url, "results": [r.to_json() for r in results]})
    else:
        for r in results:
            print(f"{r.status:9} {r.session_id}: {r.message}" + (" (resumed)" if r.resumed else ""))
            for p in r.problems[:10]:
                print(f"          {p}")
        if not results:
            print(f"nothing to upload under {out}", file=sys.stderr)
    if counts.get("refused"):
        return exitcodes.REFUSED
    if counts.get("failed"):
        return exitcodes.FAILED
    if counts.get("refused") or explicit and counts.get("skipped"):
        return exitcodes.REFUSED
    return exitcodes.OK


def _overdue(args: argparse.Namespace, out: Path, calendar: WorkCalendar) -> int:
    now = parse_now(args.now) or utc_now()
    items = overdue_sessions(out, now, calendar)
    if args.json:
        print_json([o.to_json() for o in items])
    else:
        for o in items:
            print(f"OVERDUE {o.session_id}  exam {o.exam_date}, due {o.due.isoformat(timespec='minutes')}, "
                  f"{o.overdue_by.total_seconds() / 3600:.0f} h late  ({o.path})")
        if not items:
            print(f"no session under {out} is past its upload deadline", file=sys.stderr)
    return exitcodes.FAILED if items else exitcodes.OK
