"""`examrec archive ...`: the records office (ST-2..ST-11, AD-1..AD-4).

    archive init --archive URL --officer-login L --officer-name N   prepare an archive (S3: Object Lock)
    archive user add|edit|passwd|disable|enable|list   people: login, full name, position, inventory
    archive settings [--centre] [--timezone] [--responsible]   what the forms print
    archive holidays [--add D] [--add-working-day D] [--country UA|KZ]   the centre's calendar
    archive find [--name ...] [--json | --ids]     search stored sessions (Cyrillic or passport Latin)
    archive show SESSION                      one session: details, retention, holds, objects
    archive check [SESSION...] [--deep]       compare the storage with the receipts (tampering)
    archive reindex                           rebuild the catalog from the manifests
    archive sweep [--now ISO] [--dry-run]     delete what retention allows, journal each deletion
    archive hold SESSION --complaint REF      block deletion while a complaint is open
    archive release SESSION --decision REF    record the decision, lift the hold
    archive copy SESSION --to DIR ...         issue a verified copy (annex 2 journal)
    archive view SESSION [--port N] [--open]  watch a stored session in the browser (read-only)
    archive journal list|print|export|correct NAME

--archive URL names the archive in every command; --to DIR only a copy's folder. Every command
authenticates (--user, $EXAMREC_PASSWORD or a prompt; new passwords from $EXAMREC_NEW_PASSWORD or
a prompt) and is journaled in the access journal. Exit codes: 0 ok, 1 problem found (tampering,
broken journal), 2 usage (bad option, unknown session, archive never initialised), 3 refused
(role, password, existing login, hold already there, nothing to release, 30-day rule, lock),
6 archive unreachable (endpoint down, archive folder not there).
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from datetime import date, tzinfo
from pathlib import Path
from typing import Any, Callable

from sessions import exitcodes
from sessions.archive.access import (DEFAULT_COST_LOG2, ENV_NEW_PASSWORD, MAX_COST_LOG2, MIN_COST_LOG2,
                                     check_full_name, check_login, new_user, resolve_user, user_from_record)
from sessions.archive.backend import open_backend
from sessions.archive.catalog import Query, SessionRow
from sessions.cli.archive_common import add_access_options, handles_errors, parse_now, print_json
from sessions.archive.config import ROLES, Settings, iso, load_connection, resolve_archive, utc_now
from sessions.archive.copy import CopyRequest, issue_copy, parse_date
from sessions.archive.errors import IntegrityError, Refused, UsageError
from sessions.archive.localtime import centre_zone, check_zone, parse_utc
from sessions.archive.journals import JOURNALS, JournalView, Journals, check_name
from sessions.archive.office import ArchiveContext, RecordsOffice, open_archive, receipt_summary
from sessions.archive.printing import (DEFAULT_FORM, FORM_JOURNALS, FORMS, export_csv, html_to_pdf, render_form,
                                       verification_note)
from sessions.archive.retention import RetentionPolicy
from sessions.archive.workdays import HOLIDAY_COUNTRIES, parse_holidays, public_holidays
from sessions.cli.view import add_serve_options, serve

# The SeaweedFS identities of hw-profiles/seaweedfs-iam.json that must never delete anything.
DEFAULT_DENY_PRINCIPALS = ("arn:aws:iam::000000000000:user/examrec-recorder",
                           "arn:aws:iam::000000000000:user/examrec-recorder-2",
                           "arn:aws:iam::000000000000:user/examrec-head")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="the records office: find, hold, sweep, copy, journals",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = p.add_subparsers(dest="archive_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), exitcodes.USAGE)[1])

    q = asub.add_parser("init", help="prepare a new archive",
                        description="Prepare a new archive and its first responsible person (role officer). The "
                                    "new password comes from $EXAMREC_NEW_PASSWORD or is asked twice.")
    # --to is the old spelling, kept so scripts keep working; --to otherwise only names a copy's folder.
    q.add_argument("--archive", "--to", dest="archive", metavar="URL",
                   help="file:///path or s3://bucket (default: $EXAMREC_ARCHIVE or the connection file's archive)")
    q.add_argument("--officer-login", metavar="LOGIN", help="the first officer's login (Latin letters, digits, "
                                                           "'.', '-', '_'); asked when missing")
    q.add_argument("--officer", dest="officer_login", metavar="LOGIN", help=argparse.SUPPRESS)
    q.add_argument("--officer-name", metavar="NAME", help="the officer's full name as the forms print it, e.g. "
                                                         "\"Марія Бондар\"; asked when missing")
    q.add_argument("--officer-position", default="", metavar="TEXT", help="the officer's position, e.g. "
                                                                         "\"відповідальна особа ТСЦ 8041\"")
    q.add_argument("--user", metavar="LOGIN", help=argparse.SUPPRESS)
    q.add_argument("--archive-config", metavar="FILE", help="connection file (S3 endpoint and credentials)")
    q.add_argument("--centre", default="", help="the centre's name, printed on the journals")
    q.add_argument("--timezone", default="", metavar="ZONE",
                   help="the centre's time zone for the forms, e.g. Europe/Kyiv (default: this machine's zone)")
    q.add_argument("--holiday-country", default="", choices=("", *HOLIDAY_COUNTRIES), metavar="UA|KZ",
                   help="count the country's public holidays (from the holidays package) in working-day deadlines")
    q.add_argument("--holiday", action="append", default=[], metavar="YYYY-MM-DD", help="a holiday (repeatable)")
    q.add_argument("--working-day", action="append", default=[], metavar="YYYY-MM-DD",
                   help="a weekend day or holiday that is worked (repeatable)")
    q.add_argument("--journal-years", type=int, default=10, help="how long journal entries are locked (default 10)")
    q.add_argument("--password-cost", type=int, default=DEFAULT_COST_LOG2, metavar="LOG2N",
                   help=f"scrypt cost as log2 of N for passwords ({MIN_COST_LOG2}..{MAX_COST_LOG2}; default "
                        f"{DEFAULT_COST_LOG2}, today's recommendation)")
    q.add_argument("--deny-delete-principal", action="append", metavar="ARN",
                   help="S3 principal that may never delete (repeatable; default: the recorder and head "
                        "identities of hw-profiles/seaweedfs-iam.json)")
    q.set_defaults(func=cmd_init)

    q = asub.add_parser("user", help="add, change or disable archive users")
    usub = q.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    u = usub.add_parser("add", help="add a user (password from $EXAMREC_NEW_PASSWORD or a prompt)")
    u.add_argument("name", metavar="LOGIN")
    u.add_argument("--role", required=True, choices=ROLES)
    u.add_argument("--name", dest="full_name", required=True, metavar="FULL_NAME",
                   help="the person's full name as the forms print it (a recorder account: the device's name)")
    u.add_argument("--position", default="", metavar="TEXT", help="the person's position")
    u.add_argument("--inventory", default="", metavar="NUMBER",
                   help="a recorder account's inventory number (required for role recorder)")
    add_access_options(u)
    u.set_defaults(func=cmd_user)
    u = usub.add_parser("edit", help="change a user's full name, position or inventory number")
    u.add_argument("name", metavar="LOGIN")
    u.add_argument("--name", dest="full_name", metavar="FULL_NAME")
    u.add_argument("--position", metavar="TEXT")
    u.add_argument("--inventory", metavar="NUMBER")
    add_access_options(u)
    u.set_defaults(func=cmd_user)
    for action, hlp in (("passwd", "set a new password"), ("disable", "disable a user (entries stay)"),
                        ("enable", "enable a disabled user")):
        u = usub.add_parser(action, help=hlp)
        u.add_argument("name", metavar="LOGIN")
        add_access_options(u)
        u.set_defaults(func=cmd_user)
    u = usub.add_parser("list", help="list users and roles")
    add_access_options(u)
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=cmd_user, name=None)

    q = asub.add_parser("holidays", help="the centre's calendar: holidays and worked days (working-day deadlines)",
                        description="List or change the centre's calendar: its own holidays, the weekend days or "
                                    "holidays that are worked, and the country whose public holidays count.")
    q.add_argument("--add", action="append", default=[], metavar="YYYY-MM-DD", help="a holiday (repeatable)")
    q.add_argument("--remove", action="append", default=[], metavar="YYYY-MM-DD", help="no longer a holiday")
    q.add_argument("--add-working-day", action="append", default=[], metavar="YYYY-MM-DD",
                   help="a weekend day or holiday that is worked (repeatable)")
    q.add_argument("--remove-working-day", action="append", default=[], metavar="YYYY-MM-DD")
    q.add_argument("--country", choices=(*HOLIDAY_COUNTRIES, "none"),
                   help="count this country's public holidays (from the holidays package); none: only the centre's")
    q.add_argument("--year", type=int, help="list the days off of this year (default: this year)")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_holidays)

    q = asub.add_parser("settings", help="the centre's name, time zone and responsible person",
                        description="Show or change the archive settings the forms use: the centre's name, its time "
                                    "zone (times on the forms) and the responsible person they name.")
    q.add_argument("--centre", metavar="NAME")
    q.add_argument("--timezone", metavar="ZONE", help="IANA zone, e.g. Europe/Kyiv; 'system' for this machine's")
    q.add_argument("--responsible", metavar="LOGIN", help="the officer the forms name as the responsible person")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_settings)

    q = asub.add_parser("find", help="search stored sessions (name, id, dates, examiner, plate, centre)")
    q.add_argument("--name", help="candidate's name, any part, any case, with or without diacritics, in Cyrillic or "
                                  "in the passport's Latin spelling (Koval finds Коваль)")
    q.add_argument("--candidate-id", help="candidate's ID document number")
    q.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="exam date from")
    q.add_argument("--until", dest="date_to", metavar="YYYY-MM-DD", help="exam date until (inclusive)")
    q.add_argument("--examiner", help="examiner's name, searched like --name")
    q.add_argument("--plate")
    q.add_argument("--centre")
    held = q.add_mutually_exclusive_group()
    held.add_argument("--held", action="store_true", help="only sessions under legal hold")
    held.add_argument("--not-held", action="store_true")
    q.add_argument("--include-deleted", action="store_true", help="also sessions deleted by the sweep")
    q.add_argument("--limit", type=int, default=500)
    out = q.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--ids", action="store_true", help="only the session ids, one a line (for scripts)")
    add_access_options(q)
    q.set_defaults(func=cmd_find)

    q = asub.add_parser("show", help="one stored session: details, retention, holds, objects")
    q.add_argument("session", metavar="SESSION", help="session id (or a unique beginning of it)")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_show)

    q = asub.add_parser("view", help="watch a stored session in the browser (fetched into a temporary folder)")
    q.add_argument("session", metavar="SESSION", help="session id (or a unique beginning of it)")
    add_serve_options(q)
    add_access_options(q)
    q.set_defaults(func=cmd_view)

    q = asub.add_parser("check", help="compare the storage with each session's receipt (tampering, loss)")
    q.add_argument("sessions", nargs="*", metavar="SESSION", help="default: every stored session")
    q.add_argument("--deep", action="store_true", help="also download and run examrec verify on each")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_check)

    q = asub.add_parser("reindex", help="rebuild the catalog from the manifests in the archive")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_reindex)

    q = asub.add_parser("sweep", help="delete sessions whose retention has ended (not held), journal each")
    q.add_argument("--now", metavar="ISO", help="judge retention at this time (default: now); the storage's own "
                                                "lock still follows the real clock")
    q.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_sweep)

    q = asub.add_parser("hold", help="block deletion while a complaint is open (UA IV.2)")
    q.add_argument("session", metavar="SESSION")
    q.add_argument("--complaint", required=True, metavar="REF", help="complaint reference (number, date)")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_hold)

    q = asub.add_parser("release", help="record the decision on a complaint; lift the hold when none is open")
    q.add_argument("session", metavar="SESSION")
    q.add_argument("--decision", required=True, metavar="REF", help="decision reference (number, date)")
    q.add_argument("--complaint", metavar="REF", help="which complaint (when several are open)")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_release)

    q = asub.add_parser("copy", help="issue a copy with a verification kit (UA IV.3-IV.7)")
    q.add_argument("session", metavar="SESSION")
    q.add_argument("--to", dest="dest", required=True, type=Path, metavar="DIR",
                   help="an empty folder on the medium the applicant brought")
    q.add_argument("--applicant", required=True, metavar="NAME", help="full name of the applicant")
    q.add_argument("--representative", metavar="NAME", help="full name of the representative, when one comes")
    q.add_argument("--authority", metavar="DOC", help="the representative's document of authority")
    q.add_argument("--id-document", required=True, metavar="DOC", help="identity document shown (type, number)")
    q.add_argument("--requested", required=True, metavar="YYYY-MM-DD", help="date the application was received")
    q.add_argument("--authority-request", metavar="REF",
                   help="motivated request of a court, investigator or authority (IV.4): lifts the 30-day limit")
    q.add_argument("--medium", metavar="TEXT", help="the medium, e.g. 'USB stick Kingston 32 GB, applicant's'")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_copy)

    q = asub.add_parser("journal", help="list, print, export or correct a journal")
    jsub = q.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    names = ", ".join(JOURNALS)
    j = jsub.add_parser("list", help="entries, with the chain checked (says where it breaks)")
    j.add_argument("name", help=names)
    j.add_argument("--json", action="store_true")
    add_access_options(j)
    j.set_defaults(func=cmd_journal_list)
    j = jsub.add_parser("print", help="the official form, ready to sign: HTML, and PDF with --pdf",
                        description="Print a journal as the form of its annex (cover page, numbered columns and rows, "
                                    "the centre's local time, names and inventory numbers). The technical side "
                                    "(entries shown, hash-chain state) goes to a separate verification note.")
    j.add_argument("name", help=names)
    j.add_argument("--form", choices=FORMS, help="default: ua-annex2 for copies, ua-annex3 for devices, uploads "
                                                 "and deletions, ua-holds for holds, table for access")
    j.add_argument("--out", type=Path, help="HTML file (default: <name>-<form>.html)")
    j.add_argument("--pdf", type=Path, help="also write a PDF, A4 landscape with page numbers (needs chromium)")
    j.add_argument("--note", type=Path, help="verification note (default: the HTML file's name + .verification.txt)")
    add_access_options(j)
    j.set_defaults(func=cmd_journal_print)
    j = jsub.add_parser("export", help="CSV, one row per entry as stored")
    j.add_argument("name", help=names)
    j.add_argument("--out", type=Path, help="CSV file (default: standard output)")
    add_access_options(j)
    j.set_defaults(func=cmd_journal_export)
    j = jsub.add_parser("correct", help="append a correction of an entry (entries are never edited)")
    j.add_argument("name", help=names)
    j.add_argument("entry", type=int, help="number of the entry to correct")
    j.add_argument("--reason", required=True, help="what was wrong")
    j.add_argument("--set", dest="changes", action="append", default=[], metavar="FIELD=VALUE",
                   help="corrected value (repeatable)")
    add_access_options(j)
    j.set_defaults(func=cmd_journal_correct)


# --- helpers ----------------------------------------------------------------------------------------

def _open(args: argparse.Namespace, command: str, action: str) -> ArchiveContext:
    return open_archive(args.archive, user_name=resolve_user(args.user), command=command, action=action,
                        conn_path=args.archive_config)


def read_checked(ctx: ArchiveContext, name: str) -> JournalView:
    """A journal with its chain checked and compared with the last verified entry (the anchor kept
    in the catalog); an intact journal moves the anchor to its newest entry."""
    cat = ctx.catalog()
    view = ctx.journals.read(name, anchor=cat.anchor(name))
    if view.ok and view.entries:
        cat.set_anchor(name, *view.last, iso(utc_now()))
    return view


def read_new_password(name: str, env_var: str = ENV_NEW_PASSWORD) -> str:
    """A new password: from ``env_var``, else asked twice on the terminal."""
    if os.environ.get(env_var):
        return os.environ[env_var]
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError(f"no password for the new user {name!r}: set ${env_var} or run in a terminal")
    a = getpass.getpass(f"new password for {name}: ")
    if a != getpass.getpass("again: "):
        raise UsageError("the two passwords differ")
    return a


def _date(text: str | None, option: str) -> date | None:
    return parse_date(text, option) if text else None


FIND_COLUMNS = ("exam date", "time", "candidate", "ID", "exam", "examiner", "plate", "centre", "state", "hold",
                "session")


def find_table(rows: list[SessionRow], zone: tzinfo) -> list[str]:
    """The search results as a text table with a header; times in the centre's zone."""
    cells = []
    for r in rows:
        started = parse_utc(r.started_at)
        local = started.astimezone(zone) if started else None
        state = r.state or ""
        if r.status != "stored":
            state = f"{state} ({r.status})" if state else r.status
        cells.append((local.strftime("%Y-%m-%d") if local else (r.exam_date or ""),
                      local.strftime("%H:%M") if local else "", r.candidate or "", r.candidate_id or "",
                      r.exam or "", r.examiner or "", r.plate or "", r.centre or "", state,
                      ", ".join(r.holds_list) or "-", r.session_id))
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(FIND_COLUMNS)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()   # noqa: E731
    return [line(FIND_COLUMNS)] + [line(c) for c in cells]


def count_sessions(n: int) -> str:
    return f"{n} session" if n == 1 else f"{n} sessions"


# --- commands -----------------------------------------------------------------------------------------

def _ask(prompt: str, option: str) -> str:
    """A value asked on the terminal; without one, a usage error naming the option."""
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError(f"give {option} (or run the command in a terminal to be asked)")
    return input(prompt).strip()


@handles_errors("archive init")
def cmd_init(args: argparse.Namespace) -> int:
    conn = load_connection(args.archive_config)
    url = resolve_archive(args.archive, conn)
    login = check_login(args.officer_login or args.user or _ask("officer's login (Latin letters): ", "--officer-login"))
    full_name = check_full_name(args.officer_name or _ask(f"full name of {login}: ", "--officer-name"),
                                "--officer-name")
    if not MIN_COST_LOG2 <= args.password_cost <= MAX_COST_LOG2:
        raise UsageError(f"--password-cost must be {MIN_COST_LOG2}..{MAX_COST_LOG2} (log2 of scrypt's N)")
    if not 1 <= args.journal_years <= 100:
        raise UsageError("--journal-years must be 1..100")
    zone = check_zone(args.timezone) if args.timezone else ""
    holidays = sorted(d.isoformat() for d in parse_holidays(args.holiday))
    working = sorted(d.isoformat() for d in parse_holidays(args.working_day))
    pw = read_new_password(login)
    settings = Settings(centre=args.centre, holidays=holidays, working_days=working,
                        holiday_country=args.holiday_country, timezone=zone, responsible=login,
                        password_cost=args.password_cost,
                        users=[new_user(login, "officer", pw, full_name, args.officer_position,
                                        cost_log2=args.password_cost)],
                        journal_retention_years=args.journal_years, created_at=iso(utc_now()))
    role = "admin" if conn.credentials_for("admin") else ("officer" if conn.credentials_for("officer") else None)
    backend = open_backend(url, conn, role=role)
    warnings = backend.initialise(settings.to_json(),
                                  deny_delete_principals=list(args.deny_delete_principal or DEFAULT_DENY_PRINCIPALS))
    officer_backend = open_backend(url, conn, role="officer") if url.scheme == "s3" and conn.credentials_for("officer") \
        else backend
    Journals(officer_backend, settings, user_from_record(settings.users[0])).append(
        "access", "access", {"command": "archive init", "target": str(url), "result": "ok",
                             "detail": "; ".join(warnings)})
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"archive {url} ready; officer {full_name} (login {login})")
    if url.scheme == "s3":
        print("bucket with Object Lock and versioning; every session object is locked (COMPLIANCE) until its "
              "retention ends")
    return exitcodes.OK


@handles_errors("archive user")
def cmd_user(args: argparse.Namespace) -> int:
    with _open(args, f"archive user {args.user_command}", "users") as ctx:
        ctx.target = args.name or ""
        settings = Settings.from_json(ctx.backend.read_settings(), ctx.url)
        if args.user_command == "list":
            rows = [{"login": u["name"], "full_name": u.get("full_name") or "", "position": u.get("position") or "",
                     "inventory": u.get("inventory") or "", "role": u["role"], "disabled": bool(u.get("disabled")),
                     "created_at": u.get("created_at")} for u in settings.users]
            if args.json:
                print_json(rows)
            else:
                print(f"{'login':16} {'role':9} {'full name':32} {'position / inventory':28} state")
                for r in rows:
                    print(f"{r['login']:16} {r['role']:9} {r['full_name']:32} "
                          f"{(r['inventory'] or r['position']):28} {'disabled' if r['disabled'] else 'active'}")
            return exitcodes.OK
        rec = settings.user(args.name)
        if args.user_command == "add":
            if rec:
                raise Refused(f"user {args.name!r} exists (role {rec['role']}); change it with archive user edit")
            check_login(args.name)
            full_name = check_full_name(args.full_name)
            settings.users.append(new_user(args.name, args.role, read_new_password(args.name), full_name,
                                           args.position, args.inventory, cost_log2=settings.password_cost))
            ctx.detail = f"role {args.role}"
        else:
            if not rec:
                raise UsageError(f"no user {args.name!r} (list them with: examrec archive user list)")
            if args.user_command == "passwd":
                rec["password"] = new_user(args.name, rec["role"], read_new_password(args.name),
                                           rec.get("full_name") or args.name, inventory=rec.get("inventory") or "-",
                                           cost_log2=settings.password_cost)["password"]
            elif args.user_command == "edit":
                if args.full_name is not None:
                    rec["full_name"] = check_full_name(args.full_name)
                if args.position is not None:
                    rec["position"] = " ".join(args.position.split())
                if args.inventory is not None:
                    rec["inventory"] = " ".join(args.inventory.split())
                ctx.detail = "edited"
            elif args.user_command == "disable":
                if args.name == ctx.user.name:
                    raise Refused("you cannot disable yourself; ask another officer")
                rec["disabled"] = True
            elif args.user_command == "enable":
                rec["disabled"] = False
        ctx.backend.write_settings(settings.to_json())
        print(f"user {args.name}: {args.user_command} done")
        return exitcodes.OK


@handles_errors("archive holidays")
def cmd_holidays(args: argparse.Namespace) -> int:
    changes = args.add or args.remove or args.add_working_day or args.remove_working_day or args.country
    with _open(args, "archive holidays", "settings" if changes else "find") as ctx:
        settings = Settings.from_json(ctx.backend.read_settings(), ctx.url)
        if changes:
            hol = (set(parse_holidays(settings.holidays)) | set(parse_holidays(args.add))) - \
                set(parse_holidays(args.remove))
            work = (set(parse_holidays(settings.working_days)) | set(parse_holidays(args.add_working_day))) - \
                set(parse_holidays(args.remove_working_day))
            settings.holidays = sorted(d.isoformat() for d in hol)
            settings.working_days = sorted(d.isoformat() for d in work)
            if args.country:
                settings.holiday_country = "" if args.country == "none" else args.country
            ctx.backend.write_settings(settings.to_json())
            ctx.detail = (f"holidays +{args.add} -{args.remove}, working days +{args.add_working_day} "
                          f"-{args.remove_working_day}, country {settings.holiday_country or 'none'}")
        year = args.year or utc_now().year
        cal = settings.calendar()
        public = sorted(public_holidays(cal.country, year) - cal.working_days) if cal.country else []
        if args.json:
            print_json({"country": cal.country, "holidays": settings.holidays, "working_days": settings.working_days,
                        "public_holidays": {"year": year, "days": [d.isoformat() for d in public]}})
            return exitcodes.OK
        for h in settings.holidays:
            print(h)
        for w in settings.working_days:
            print(f"{w} worked")
        if cal.country:
            print(f"{len(public)} public holiday(s) of {cal.country} in {year} that are days off"
                  + (": " + ", ".join(d.isoformat() for d in public) if public else ""), file=sys.stderr)
        return exitcodes.OK


@handles_errors("archive settings")
def cmd_settings(args: argparse.Namespace) -> int:
    changes = args.centre is not None or args.timezone is not None or args.responsible is not None
    with _open(args, "archive settings", "settings" if changes else "find") as ctx:
        settings = Settings.from_json(ctx.backend.read_settings(), ctx.url)
        if args.centre is not None:
            settings.centre = " ".join(args.centre.split())
        if args.timezone is not None:
            settings.timezone = "" if args.timezone == "system" else check_zone(args.timezone)
        if args.responsible is not None:
            rec = settings.user(args.responsible)
            if not rec or rec.get("role") != "officer":
                raise UsageError(f"--responsible {args.responsible!r}: give the login of an officer "
                                 "(see: examrec archive user list)")
            settings.responsible = args.responsible
        if changes:
            ctx.backend.write_settings(settings.to_json())
            ctx.detail = "changed"
        person = settings.responsible_person() or {}
        info = {"centre": settings.centre, "timezone": settings.timezone or "system",
                "responsible": person.get("name"), "responsible_name": person.get("full_name"),
                "holiday_country": settings.holiday_country or "none", "password_cost": settings.password_cost,
                "journal_retention_years": settings.journal_retention_years}
        if args.json:
            print_json(info)
        else:
            for k, v in info.items():
                print(f"{k:24} {v if v not in (None, '') else '-'}")
        return exitcodes.OK


@handles_errors("archive find")
def cmd_find(args: argparse.Namespace) -> int:
    q = Query(name=args.name, candidate_id=args.candidate_id, date_from=_date(args.date_from, "--from"),
              date_to=_date(args.date_to, "--until"), examiner=args.examiner, plate=args.plate, centre=args.centre,
              held=True if args.held else (False if args.not_held else None), include_deleted=args.include_deleted,
              limit=args.limit)
    with _open(args, "archive find", "find") as ctx:
        ctx.target = " ".join(f"{k}={v}" for k, v in vars(q).items() if v not in (None, False) and k != "limit")
        office = RecordsOffice(ctx)
        rows = office.find(q)
        ctx.detail = f"{len(rows)} found"
        if args.json:
            print_json([r.to_json() for r in rows])
        elif args.ids:
            for r in rows:
                print(r.session_id)
        else:
            if rows:
                for line in find_table(rows, centre_zone(ctx.settings.timezone)):
                    print(line)
            print(count_sessions(len(rows)))
        return exitcodes.OK


@handles_errors("archive show")
def cmd_show(args: argparse.Namespace) -> int:
    with _open(args, "archive show", "show") as ctx:
        office = RecordsOffice(ctx)
        row = office.session(args.session)
        receipt = office.receipt(row)
        decision = RetentionPolicy().decide(office.facts(row), utc_now())
        info = {**receipt_summary(receipt), "holds": row.holds_list, "retention": decision.to_json(),
                "objects": receipt.get("objects"), "verify": receipt.get("verify")}
        if args.json:
            print_json(info)
            return exitcodes.OK
        for k in ("session", "exam_date", "candidate", "candidate_id", "examiner", "plate", "centre", "profile",
                  "retention_months", "expires_at", "uploaded_at", "uploaded_by"):
            print(f"{k:16} {info.get(k) if info.get(k) is not None else ''}")
        print(f"{'holds':16} {', '.join(row.holds_list) or '-'}")
        print(f"{'retention':16} {decision.action}: {decision.reason}")
        for o in receipt.get("objects") or []:
            print(f"  {o['size']:>12}  {o['sha256'][:16]}...  {o['file']}")
        return exitcodes.OK


def _progress_line(verb: str) -> Callable[[int, int, int | None], None]:
    """Progress on stderr for long work (a copy of a session, a deep check of the archive)."""
    def show(done: int, of: int, nbytes: int | None) -> None:
        size = f", {nbytes / 1e6:.1f} MB" if nbytes is not None else ""
        end = "\n" if done >= of else ""
        print(f"\r{verb} {done}/{of}{size}", end=end, file=sys.stderr, flush=True)
    return show


@handles_errors("archive view")
def cmd_view(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="examrec-view-") as tmp:
        with _open(args, "archive view", "show") as ctx:
            office = RecordsOffice(ctx)
            row = office.session(args.session)
            root = Path(tmp) / row.session_id
            for o in office.receipt(row).get("objects", []):
                (root / o["file"]).parent.mkdir(parents=True, exist_ok=True)
                if office.backend.download(o["key"], root / o["file"]) != o["sha256"]:
                    raise IntegrityError(f"{o['key']}: the stored bytes differ from the receipt; "
                                         f"run `examrec archive check {row.session_id}`")
            ctx.detail = "opened for review"
        return serve(root, args)


@handles_errors("archive check")
def cmd_check(args: argparse.Namespace) -> int:
    with _open(args, "archive check", "check") as ctx:
        office = RecordsOffice(ctx)
        if args.sessions:
            rows = [office.session(s) for s in args.sessions]
        else:
            for w in office.sync():
                print(f"warning: {w}", file=sys.stderr)
            rows = office.catalog.all()
        ctx.target = ",".join(r.session_id for r in rows[:20])
        show = _progress_line("checking")
        results = []
        for i, r in enumerate(rows, 1):
            results.append(office.check(r, deep=args.deep))
            show(i, len(rows), None)
        bad = [r for r in results if not r.ok]
        ctx.detail = f"{len(results)} checked, {len(bad)} with problems"
        if args.json:
            print_json([r.to_json() for r in results])
        else:
            for r in results:
                print(f"{'OK    ' if r.ok else 'FAILED'} {r.session_id} ({r.objects} objects, {r.verified})")
                for p in r.problems:
                    print(f"   {p}")
        return exitcodes.OK if not bad else exitcodes.FAILED


@handles_errors("archive reindex")
def cmd_reindex(args: argparse.Namespace) -> int:
    with _open(args, "archive reindex", "reindex") as ctx:
        res = RecordsOffice(ctx).reindex()
        ctx.detail = f"{res['stored']} stored, {res['incomplete']} incomplete"
        if args.json:
            print_json(res)
        else:
            print(f"catalog rebuilt: {res['stored']} stored, {res['incomplete']} incomplete upload(s), "
                  f"{res['deleted']} deleted earlier")
            for p in res["problems"]:
                print(f"problem: {p}")
        return exitcodes.OK if not res["problems"] else exitcodes.FAILED


@handles_errors("archive sweep")
def cmd_sweep(args: argparse.Namespace) -> int:
    now = parse_now(args.now)
    with _open(args, "archive sweep" + (" --dry-run" if args.dry_run else ""), "sweep") as ctx:
        items = RecordsOffice(ctx).sweep(now=now, dry_run=args.dry_run)
        counts: dict[str, int] = {}
        for it in items:
            counts[it.action] = counts.get(it.action, 0) + 1
        ctx.detail = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        ctx.target = f"now={(now or utc_now()).isoformat(timespec='seconds')}"
        if args.json:
            print_json({"now": (now or utc_now()).isoformat(), "items": [i.to_json() for i in items], "counts": counts})
        else:
            for it in items:
                extra = f" ({it.objects} objects, {it.bytes} bytes, journal entry {it.journal_entry})" \
                    if it.action == "deleted" else ""
                late = " LATE" if it.late else ""
                print(f"{it.action:12} {it.session_id}  exam {it.exam_date}: {it.reason}{extra}{late}")
            print(f"sweep: {ctx.detail or 'nothing stored'}", file=sys.stderr)
        return exitcodes.REFUSED if counts.get("refused") else exitcodes.OK


@handles_errors("archive hold")
def cmd_hold(args: argparse.Namespace) -> int:
    with _open(args, "archive hold", "hold") as ctx:
        res = RecordsOffice(ctx).hold(args.session, args.complaint)
        ctx.detail = f"complaint {args.complaint}"
        if args.json:
            print_json(res)
        else:
            print(f"session {res['session']} held for complaint {args.complaint} ({res['objects']} objects under "
                  f"legal hold; open complaints: {', '.join(res['holds'])}); journal entry {res['journal_entry']}")
        return exitcodes.OK


@handles_errors("archive release")
def cmd_release(args: argparse.Namespace) -> int:
    with _open(args, "archive release", "release") as ctx:
        res = RecordsOffice(ctx).release(args.session, args.decision, args.complaint)
        ctx.detail = f"complaint {res['released']} decision {args.decision}"
        if args.json:
            print_json(res)
        elif res["holds"]:
            print(f"complaint {res['released']} decided ({args.decision}); session {res['session']} stays held for "
                  f"{', '.join(res['holds'])}; journal entry {res['journal_entry']}")
        else:
            print(f"complaint {res['released']} decided ({args.decision}); legal hold lifted on {res['session']}; "
                  f"retention applies again; journal entry {res['journal_entry']}")
        return exitcodes.OK


@handles_errors("archive copy")
def cmd_copy(args: argparse.Namespace) -> int:
    req = CopyRequest(session=args.session, dest=args.dest, applicant=args.applicant, id_document=args.id_document,
                      requested=parse_date(args.requested, "--requested"), representative=args.representative,
                      authority=args.authority, authority_request=args.authority_request, medium=args.medium)
    with _open(args, "archive copy", "copy") as ctx:
        from sessions.web.review_kit import add_copy_page  # (the review player's files: only a copy needs them)
        res = issue_copy(RecordsOffice(ctx), req, progress=_progress_line("copying"), add_page=add_copy_page)
        ctx.detail = f"to {res.dest} for {args.representative or args.applicant}, journal entry {res.journal_entry}"
        if args.json:
            print_json(res.to_json())
        else:
            print(f"copy of {res.session_id} written to {res.dest}: {res.files} files, {res.bytes} bytes, "
                  "verified against the stored SHA-256")
            print(f"due by {res.deadline} (3 working days from the application on {req.requested})"
                  + (" - LATE" if res.late else ""))
            print("personal-data notice added (the recording shows other people)" if res.notice
                  else "no personal-data notice needed (no other people in the recording)")
            print(f"journal of copies: entry {res.journal_entry}; have the recipient sign the printed journal "
                  "(examrec archive journal print copies)")
        for w in res.warnings:
            print(f"warning: {w}", file=sys.stderr)
        return exitcodes.OK


@handles_errors("archive journal")
def cmd_journal_list(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    with _open(args, f"archive journal list {name}", "journal-read") as ctx:
        view = read_checked(ctx, name)
        ctx.detail = f"{len(view.entries)} entries, {'intact' if view.ok else 'NOT intact'}"
        if args.json:
            print_json({"journal": name, "ok": view.ok, "problems": view.problems,
                        "entries": [{**e.record, "sha256": e.hash, "corrected_by": e.corrected_by, "forged": e.forged}
                                    for e in view.entries]})
        else:
            for e in view.entries:
                fields = " ".join(f"{k}={v}" for k, v in e.record.items()
                                  if k not in ("entry", "type", "t_utc", "user", "role", "host", "prev_sha256", "recorded")
                                  and v not in (None, ""))
                corr = f"  (corrected by {', '.join(map(str, e.corrected_by))})" if e.corrected_by else ""
                if e.forged:
                    corr += f"  [FORGED: {e.forged}]"
                print(f"{'!' if e.forged else '#'}{e.number:<5} {e.record.get('t_utc', '')}  {e.record.get('user', '')}({e.record.get('role', '')})"
                      f"  {e.type}: {fields}{corr}")
            if view.ok:
                n, h = view.last
                print(f"journal {name}: chain intact, {n} entries, last {h[:16]}...", file=sys.stderr)
            for p in view.problems:
                print(f"BROKEN: {p}")
        return exitcodes.OK if view.ok else exitcodes.FAILED


@handles_errors("archive journal")
def cmd_journal_print(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    form = args.form or DEFAULT_FORM[name]
    sources = FORM_JOURNALS.get(form, (name,))
    if name not in sources:
        raise UsageError(f"form {form} prints the journals {', '.join(sources)}, not {name}")
    with _open(args, f"archive journal print {name}", "journal-read") as ctx:
        views = {n: read_checked(ctx, n) for n in sources}
        office = RecordsOffice(ctx)
        office.sync()

        def session_details(session_id: str) -> dict[str, Any] | None:
            row = office.catalog.get(session_id)
            return row.data if row else None

        printed = render_form(views, form, ctx.settings, sessions=session_details)
        out = args.out or Path(f"{name}-{form}.html")
        out.write_text(printed.html, encoding="utf-8")
        note = args.note or out.with_name(out.name + ".verification.txt")
        note.write_text(verification_note(printed, views, ctx.url, ctx.user.name, utc_now()), encoding="utf-8")
        print(f"wrote {out} ({len(printed.rows)} rows) and the verification note {note}")
        if args.pdf:
            html_to_pdf(printed.html, args.pdf)
            print(f"wrote {args.pdf}")
        bad = [p for v in views.values() for p in v.problems]
        for p in bad:
            print(f"BROKEN: {p}", file=sys.stderr)
        ctx.detail = f"form {form}"
        return exitcodes.OK if not bad else exitcodes.FAILED


@handles_errors("archive journal")
def cmd_journal_export(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    with _open(args, f"archive journal export {name}", "journal-read") as ctx:
        view = read_checked(ctx, name)
        text = export_csv(view)
        if args.out:
            args.out.write_text(text, encoding="utf-8")
            print(f"wrote {args.out} ({len(view.entries)} entries)", file=sys.stderr)
        else:
            sys.stdout.write(text)
        for p in view.problems:
            print(f"BROKEN: {p}", file=sys.stderr)
        return exitcodes.OK if view.ok else exitcodes.FAILED


def _parse_changes(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise UsageError(f"--set {it!r}: write FIELD=VALUE")
        k, v = it.split("=", 1)
        val: Any = v
        if v.lower() in ("true", "false"):
            val = v.lower() == "true"
        out[k.strip()] = val
    return out


@handles_errors("archive journal")
def cmd_journal_correct(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    changes = _parse_changes(args.changes)
    with _open(args, f"archive journal correct {name}", "journal-write") as ctx:
        ctx.target = f"{name} entry {args.entry}"
        e = ctx.journals.correct(name, args.entry, args.reason, changes)
        print(f"journal {name}: entry {e.number} corrects entry {args.entry}")
        return exitcodes.OK


__all__ = ["register", "DEFAULT_DENY_PRINCIPALS"]
