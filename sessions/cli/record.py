"""`examrec record` and `examrec info`."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

from sessions import exitcodes
from core.profile import chosen_profile_path, load_profile
from sessions.recorder.checks import results_table
from sessions.cli.check import interrupts_raise
from sessions.cli.repair import repair_interrupted
from sessions.cli.statusline import StatusTerminal
from sessions.recorder.control import AlreadyRunning, ControlServer, socket_path
from sessions.evidence.layout import ManifestError
from sessions.evidence.summary import format_table, summary

TABLE_COLUMNS = ["stream", "segments", "frames", "dropped", "fps", "mb", "gaps"]
EXAM_TYPES = ("theory", "practical")
DETAIL_KEYS = ("candidate", "candidate_id", "examiner", "plate", "centre", "exam")
MAX_DETAIL_CHARS = 200        # a name, an ID, a plate: generous for any of them
MAX_DETAILS_FILE = 64 * 1024  # a details file is a handful of short fields
MAX_DURATION_S = 24 * 3600.0  # the longest session `--duration` may ask for


class DetailsError(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DetailsError(f"key {key!r} appears twice; give each detail once")
        out[key] = value
    return out


def check_detail(key: str, value: object) -> str:
    """A detail's text, or DetailsError: text, at most MAX_DETAIL_CHARS, writable as UTF-8, one line."""
    if not isinstance(value, str):
        raise DetailsError(f"{key}: must be text, got {str(value)[:40]!r}")
    if len(value) > MAX_DETAIL_CHARS:
        raise DetailsError(f"{key}: {len(value)} characters; at most {MAX_DETAIL_CHARS} are kept in a session")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in JSON, or bytes that are not UTF-8 on the command line).
        raise DetailsError(f"{key}: holds characters that are not valid Unicode text; retype it") from None
    if any(ch < " " for ch in value):
        raise DetailsError(f"{key}: holds control characters (line breaks, tabs); give it on one line")
    return value


def session_details(args: argparse.Namespace) -> dict:
    """The session details from --details FILE.json and the options (options win)."""
    details: dict = {}
    if args.details:
        try:
            if args.details.stat().st_size > MAX_DETAILS_FILE:
                raise DetailsError(f"larger than {MAX_DETAILS_FILE // 1024} KiB; a details file holds a few short fields")
            details = json.loads(args.details.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates)
        except DetailsError as exc:
            raise DetailsError(f"{args.details}: {exc}") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise DetailsError(f"{args.details}: not a readable JSON file ({str(exc)[:160]})") from None
        if not isinstance(details, dict):
            raise DetailsError(f"{args.details}: must be a JSON object with keys {', '.join(DETAIL_KEYS)}")
        unknown = set(details) - set(DETAIL_KEYS)
        if unknown:
            raise DetailsError(f"{args.details}: unknown keys {sorted(unknown)}; allowed: {', '.join(DETAIL_KEYS)}")
    for key in DETAIL_KEYS:
        value = getattr(args, key)
        if value is not None:
            details[key] = value
    if "exam" in details and details["exam"] not in EXAM_TYPES:
        raise DetailsError(f"exam type {details['exam']!r}: allowed {', '.join(EXAM_TYPES)}")
    for key, value in details.items():
        check_detail(key, value)
    return details


def duration_arg(text: str) -> float:
    """``--duration``: seconds, more than 0 and at most a day (argparse turns ValueError into exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 < value <= MAX_DURATION_S):  # also false for NaN
        raise argparse.ArgumentTypeError(f"{text} s: give a number of seconds above 0 and at most "
                                         f"{MAX_DURATION_S:.0f} (a day); to record until stopped, leave it out")
    return value


def writable_out_root(out_root: Path) -> str | None:
    """Why sessions cannot be written under ``out_root`` (None when they can). Creates nothing: a
    probe folder is made and removed in ``out_root``, or in its nearest existing parent when it
    does not exist yet (recording creates it later)."""
    if out_root.exists() and not out_root.is_dir():
        return f"{out_root} is not a folder; choose another --out"
    probe_in = next((p for p in (out_root, *out_root.parents) if p.exists()), Path("/"))
    try:
        Path(tempfile.mkdtemp(prefix=".examrec-probe-", dir=probe_in)).rmdir()
    except OSError as exc:
        return f"cannot write sessions under {out_root} ({exc.strerror or exc}); choose another --out"
    return None


def show_notice(text: str) -> None:
    """The notice to the candidate (KZ 16) on the examiner's screen."""
    bar = "=" * (len(text) + 4)
    print(f"\n{bar}\n  {text}\n{bar}\n", file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record a session from a profile",
                       description="Record a session: every stream of the profile, on one timeline, until "
                                   "--duration ends or SIGINT/SIGTERM/`examrec stop`. Prints the session folder "
                                   "and a per-stream table (or the manifest with --json).")
    p.add_argument("--profile", type=Path, default=None, help="hardware profile (default: $EXAMREC_PROFILE, else /etc/examrec/profile.toml)")
    p.add_argument("--duration", type=duration_arg, default=None, metavar="S",
                   help=f"stop after S seconds (0 < S <= {MAX_DURATION_S:.0f})")
    p.add_argument("--out", type=Path, default=None, help="output root (default: the profile's `out`)")
    p.add_argument("--json", action="store_true", help="print the final manifest as JSON")
    p.add_argument("--force", action="store_true",
                   help="start even when a mandatory pre-exam check fails (the failed checks are logged)")
    d = p.add_argument_group("session details (stored in the manifest; any script)")
    d.add_argument("--candidate", help="candidate's full name")
    d.add_argument("--candidate-id", help="candidate's ID (document or application number)")
    d.add_argument("--examiner", help="examiner's full name")
    d.add_argument("--plate", help="vehicle's plate")
    d.add_argument("--centre", help="exam centre")
    d.add_argument("--exam", choices=EXAM_TYPES, help="exam type")
    d.add_argument("--details", type=Path, metavar="FILE.json", help="all of the above as a JSON object")
    p.add_argument("--gps", metavar="gpsd://HOST:PORT", help="GPS source instead of the profile's")
    p.add_argument("--pedals", metavar="URL", help="pedal sensor port (a pyserial URL) instead of the profile's")
    p.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)  # benchmarks: replay as fast as possible
    p.set_defaults(func=cmd_record)

    i = sub.add_parser("info", help="show what a session holds",
                       description="Show a session's state, streams, segments, faults and events.")
    i.add_argument("session", type=Path)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)


def status_line(st: dict) -> str:
    """The examiner's one-line view: state, stage, time, and every camera LIVE, PAUSED or not."""
    red, plain = "\033[1;31m", "\033[0m"
    cams = "  ".join(f"{s['stream']} {s['state']}" if s["state"] in ("LIVE", "PAUSED")
                     else f"{red}{s['stream']} {s['state']}{plain}" for s in st["streams"])
    state = "REC" if st["state"] == "recording" else st["state"].upper()
    return f"● {state} stage {st['stage']} {st['elapsed']}  {cams}"


def cmd_record(args: argparse.Namespace) -> int:
    # imported here: the recorder brings PyAV, OpenCV and numpy (0.5 s), which other commands don't need
    from sessions.recorder.controller import Recorder
    profile = load_profile(chosen_profile_path(args.profile))
    try:
        details = session_details(args)
    except DetailsError as exc:
        print(f"examrec: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    out_root = args.out or profile.resolve(profile.out)
    why = writable_out_root(out_root)
    if why:
        print(f"examrec: not recording: {why}", file=sys.stderr)
        return exitcodes.USAGE
    control = ControlServer(socket_path(profile), lambda req: rec.dispatch(req))
    try:
        control.start()  # before anything is written: a second recorder on this profile stops here
    except AlreadyRunning as exc:
        print(f"examrec: not recording: {exc}", file=sys.stderr)
        return exitcodes.REFUSED
    rec: Recorder | None = None
    # On a terminal: one status line at the bottom, log lines (of every process) above it.
    terminal = StatusTerminal().start() if StatusTerminal.wanted() else None
    try:
        if out_root.exists():
            # A session left without a clean stop (power cut, kill) is made playable before anything new.
            for report in repair_interrupted(out_root):
                print(f"examrec: repaired interrupted session {report.session} (last frame kept at "
                      f"{report.last_pts_s} s)", file=sys.stderr)
        rec = Recorder(profile, out_root, details=details, realtime=not args.fast,
                       gps_url=args.gps, pedals_url=args.pedals)
        with interrupts_raise():  # SIGTERM during the checks: the except below ends the children
            session_dir = rec.prepare()
            results = rec.run_checks()
        failed = rec.failed_checks()
        if failed or not args.json:
            print(results_table(results), file=sys.stderr)
        if failed and not args.force:
            print(f"examrec: not recording: {len(failed)} pre-exam check(s) failed "
                  f"({', '.join(c.check for c in failed)}); fix them, or use --force (it is logged)", file=sys.stderr)
            rec.abort({c.check: c.detail for c in failed})
            return exitcodes.REFUSED
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: rec.request_stop("signal"))
        show_notice(profile.notice)
        rec.start(duration_s=args.duration)
        if not args.json:
            print(f"recording {profile.name} -> {session_dir}  (control: {control.path})", file=sys.stderr)
        code = rec.run(progress=(lambda r: terminal.show(status_line(r.status()))) if terminal else None)
    except BaseException as exc:
        if rec is not None and rec.streams:
            if rec.state in ("recording", "paused", "stopping"):
                rec.emergency_stop(exc)
            else:  # nothing recorded yet: the streams end and the empty folder goes
                rec.abort({"interrupted": repr(exc)})
        raise
    finally:
        control.stop()
        if terminal is not None:
            terminal.stop()
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
    except ManifestError as exc:
        print(f"examrec: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return exitcodes.OK
    d = info["details"]
    print(f"session   {info['session_id']}")
    print(f"profile   {info['profile']}")
    print(f"state     {info['state']}" + ("  (repaired)" if info["repaired"] else "")
          + ("  DEMO: recorded from a replay profile, not an exam" if info["demo"] else ""))
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
