"""`examrec device issue|return|list`: the journal of issue and return of recorders and media
(AD-1, AD-2; KZ 7, 8, 20 and annex 1; UA V.1 and annex 3).

    examrec device issue INVENTORY --person NAME [--battery-checked] [--faults TEXT]
    examrec device return INVENTORY --person NAME [--battery-checked] [--faults TEXT]
    examrec device list [--json]

Each recorder and medium is known by its inventory number. Issuing a device that is out, or
taking back one that is in, is refused: the journal would no longer say where a device is. A
wrong entry is corrected with `examrec archive journal correct devices N --reason ...`.
Officer role. Exit codes: 0 ok, 2 usage, 3 refused, 6 archive unreachable.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from sessions import exitcodes
from sessions.archive.access import resolve_user
from sessions.cli.archive_common import add_access_options, handles_errors, parse_now, print_json
from sessions.archive.config import iso, utc_now
from sessions.archive.errors import Refused, UsageError
from sessions.archive.journals import JournalView
from sessions.archive.office import open_archive

ITEMS = ("recorder", "medium")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("device", aliases=["equipment"], help="issue and return of recorders and media (journal)",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    for action, hlp in (("issue", "hand a recorder or medium to a person"),
                        ("return", "take a recorder or medium back")):
        q = dsub.add_parser(action, help=hlp)
        q.add_argument("inventory", metavar="INVENTORY", help="inventory number (KZ 7)")
        q.add_argument("--person", required=True, metavar="NAME", help="full name of the person")
        q.add_argument("--item", choices=ITEMS, default="recorder", help="recorder (default) or medium")
        q.add_argument("--battery-checked", action="store_true", help="the battery charge was checked (KZ 20)")
        q.add_argument("--faults", default="", metavar="TEXT", help="faults found (empty: none)")
        q.add_argument("--note", default="", metavar="TEXT")
        q.add_argument("--at", metavar="ISO", help="when (default: now)")
        add_access_options(q)
        q.set_defaults(func=cmd_device)
    q = dsub.add_parser("list", help="where every device is, from the journal")
    q.add_argument("--json", action="store_true")
    add_access_options(q)
    q.set_defaults(func=cmd_list)


def device_status(view: JournalView) -> dict[str, dict[str, Any]]:
    """The last issue/return of each inventory number (corrections applied)."""
    status: dict[str, dict[str, Any]] = {}
    for e in view.facts():
        r = e.effective
        inv = str(r.get("inventory"))
        if e.type in ("issue", "return"):
            status[inv] = {"inventory": inv, "item": r.get("item"), "out": e.type == "issue",
                           "person": r.get("person"), "at": r.get("at"), "entry": e.number,
                           "faults": r.get("faults") or ""}
    return status


@handles_errors("device")
def cmd_device(args: argparse.Namespace) -> int:
    at = parse_now(args.at) or utc_now()
    inv = args.inventory.strip()
    if not inv:
        raise UsageError("INVENTORY is empty: give the device's inventory number")
    if not args.person.strip():
        raise UsageError("--person is empty: give the full name")
    with open_archive(args.archive, user_name=resolve_user(args.user), command=f"device {args.device_command}",
                      action="device", conn_path=args.archive_config) as ctx:
        ctx.target = inv
        view = ctx.journals.read("devices")
        for p in view.problems:
            print(f"warning: {p}", file=sys.stderr)
        cur = device_status(view).get(inv)
        if args.device_command == "issue" and cur and cur["out"]:
            raise Refused(f"{inv} is still out: issued to {cur['person']} at {cur['at']} (entry {cur['entry']}); "
                          "record its return first")
        if args.device_command == "return" and not (cur and cur["out"]):
            raise Refused(f"{inv} is not out (last entry: {('returned at ' + str(cur['at'])) if cur else 'none'}); "
                          "nothing to return")
        note = args.note
        if args.device_command == "return" and cur and cur["person"] != args.person:
            note = (note + "; " if note else "") + f"returned by {args.person}, issued to {cur['person']}"
        e = ctx.journals.append("devices", args.device_command, {
            "inventory": inv, "item": args.item, "person": args.person, "at": iso(at),
            "battery_checked": bool(args.battery_checked), "faults": args.faults, "note": note,
            **({"issue_entry": cur["entry"]} if args.device_command == "return" and cur else {})})
        print(f"{args.item} {inv} {'issued to' if args.device_command == 'issue' else 'returned by'} {args.person} "
              f"at {iso(at)}; journal devices entry {e.number}")
        if args.faults:
            print(f"faults recorded: {args.faults} (report to the head of the unit, KZ 20)", file=sys.stderr)
        return exitcodes.OK


@handles_errors("device")
def cmd_list(args: argparse.Namespace) -> int:
    with open_archive(args.archive, user_name=resolve_user(args.user), command="device list", action="journal-read",
                      conn_path=args.archive_config) as ctx:
        view = ctx.journals.read("devices")
        st = sorted(device_status(view).values(), key=lambda s: s["inventory"])
        if args.json:
            print_json({"ok": view.ok, "problems": view.problems, "devices": st})
        else:
            for s in st:
                where = f"OUT with {s['person']} since {s['at']}" if s["out"] else f"in store since {s['at']}"
                print(f"{s['inventory']:14} {s['item'] or '':9} {where}" + (f"  faults: {s['faults']}" if s["faults"] else ""))
            for p in view.problems:
                print(f"BROKEN: {p}")
        return exitcodes.OK if view.ok else exitcodes.FAILED
