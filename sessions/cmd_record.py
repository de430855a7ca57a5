"""`examrec record` and `examrec info`."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from . import exitcodes
from .profile import load_profile
from .cmd_repair import repair_interrupted
from .recorder import Recorder
from .session_summary import NotASession, format_table, summary

DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "hw-profiles" / "replay.toml"
TABLE_COLUMNS = ["stream", "segments", "frames", "dropped", "fps", "mb", "gaps"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record a session from a profile",
                       description="Record a session: every stream of the profile, on one timeline, until "
                                   "--duration ends or SIGINT/SIGTERM/`examrec stop`. Prints the session folder "
                                   "and a per-stream table (or the manifest with --json).")
    p.add_argument("--profile", type=Path, default=None, help=f"hardware profile (default: {DEFAULT_PROFILE.name})")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--out", type=Path, default=None, help="output root (default: the profile's `out`)")
    p.add_argument("--json", action="store_true", help="print the final manifest as JSON")
    p.add_argument("--force", action="store_true", help="start even when a device is missing (logged)")
    p.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)  # benchmarks: replay as fast as possible
    p.set_defaults(func=cmd_record)

    i = sub.add_parser("info", help="show what a session holds",
                       description="Show a session's state, streams, segments, faults and events.")
    i.add_argument("session", type=Path)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)


def _progress(rec: Recorder) -> None:
    if not sys.stderr.isatty():
        return
    parts = []
    for name, rt in rec.streams.items():
        st = rt.stats
        parts.append(f"{name} {st.get('encoded', 0)}f/{st.get('dropped', 0)}d")
    elapsed = (rec.clock.pts_s(__import__('time').monotonic_ns()) if rec.clock else 0)
    print(f"\r● REC {elapsed:7.1f}s  " + "  ".join(parts), end="", file=sys.stderr, flush=True)


def cmd_record(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile or DEFAULT_PROFILE)
    out_root = args.out or profile.resolve(profile.out)
    if out_root.exists():
        # A session left without a clean stop (power cut, kill) is made playable before anything new.
        for report in repair_interrupted(out_root):
            print(f"examrec: repaired interrupted session {report.session} (last frame kept at "
                  f"{report.last_pts_s} s)", file=sys.stderr)
    rec = Recorder(profile, out_root, realtime=not args.fast, force=args.force)
    session_dir = rec.prepare()
    problems = rec.device_problems()
    if problems and not args.force:
        for name, why in problems.items():
            print(f"examrec: stream {name}: {why}", file=sys.stderr)
        print("examrec: not recording: a device is missing (use --force to record the others; it is logged)",
              file=sys.stderr)
        rec.abort(problems)
        return exitcodes.REFUSED
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: rec.request_stop("signal"))
    rec.start(duration_s=args.duration)
    if not args.json:
        print(f"recording {profile.name} -> {session_dir}", file=sys.stderr)
    code = rec.run(progress=_progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(rec.manifest, indent=2, ensure_ascii=False))
    else:
        info = summary(session_dir)
        print(f"session {info['session_id']}  state {info['state']}  duration {info['duration_s']:.1f} s")
        print(f"folder  {session_dir}")
        print(format_table(info["streams"], TABLE_COLUMNS))
    return code


def cmd_info(args: argparse.Namespace) -> int:
    try:
        info = summary(args.session)
    except NotASession as exc:
        print(f"examrec: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return exitcodes.OK
    d = info["details"]
    print(f"session   {info['session_id']}")
    print(f"profile   {info['profile']}")
    print(f"state     {info['state']}" + ("  (repaired)" if info["repaired"] else ""))
    print(f"started   {info['started_at']}")
    print(f"ended     {info['ended_at'] or '-'}" + (f"  ({info['duration_s']:.1f} s)" if info["duration_s"] else ""))
    if d:
        print("details   " + ", ".join(f"{k}: {v}" for k, v in d.items()))
    if info["repaired"]:
        r = info["repaired"]
        print(f"repaired  {r.get('at')}: last frame kept at {r.get('last_pts_s')} s; trimmed {r.get('trimmed_bytes', 0)} bytes to recovered/")
    print()
    print(format_table(info["streams"], TABLE_COLUMNS))
    if info["stages"]:
        print()
        for st in info["stages"]:
            print(f"stage {st['stage']}: {st['start_pts_s']} s .. {st['end_pts_s']} s")
    if info["faults"]:
        print()
        for f in info["faults"]:
            print(f"{f.get('t_utc')}  {f['type']}  {f.get('device') or f.get('stream', '')}: {f.get('message', '')}")
    if info.get("sensors"):
        print()
        for name, counts in info["sensors"].items():
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print()
    print("events    " + ", ".join(f"{k} {v}" for k, v in sorted(info["events"].items())))
    return exitcodes.OK
