"""`examrec status|pause|resume|stop|photo`: talk to the running recorder over its control socket.
None of them can delete or change what was recorded: there is no such command."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sessions import exitcodes
from sessions.recorder.control import NoRecorder, SeveralRecorders, find_socket, request, socket_path
from core.profile import load_profile
from sessions.evidence.summary import format_table


def _socket_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", type=Path, help="the recorder's control socket (default: the only one running)")
    p.add_argument("--profile", type=Path, help="find the recorder of this profile")
    p.add_argument("--json", action="store_true", help="print the recorder's answer as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("status", help="state, stage, elapsed time and every stream's health",
                       description="Ask the running recorder for its state, stage, elapsed time, per-stream fps, "
                                   "drops and health, GPS, pedals and free disk.")
    _socket_args(s)
    s.set_defaults(func=cmd_status)
    p = sub.add_parser("pause", help="end the current exam stage (UA II.3)",
                       description="Pause between exam stages: a banner with the time, reason and plate shows on "
                                   "every stream for 3 s, then the stage's segments end; logged as an event. "
                                   "A `resume` while the banner shows cancels the pause.")
    p.add_argument("--reason", help="the reason, or the number of one of the profile's reasons "
                                    "([exam] pause_reasons); without it, the list is offered on a terminal")
    p.add_argument("--plate", help="the vehicle's plate (default: the exam's)")
    _socket_args(p)
    p.set_defaults(func=cmd_pause)
    r = sub.add_parser("resume", help="start the next exam stage",
                       description="Resume after a pause: the next stage's segments start, a banner shows for 3 s, "
                                   "the time and plate are logged. During the pause's banner it cancels the pause.")
    r.add_argument("--plate", help="the vehicle's plate (default: the exam's)")
    _socket_args(r)
    r.set_defaults(func=lambda a: _send(a, {"cmd": "resume", "plate": a.plate}))
    t = sub.add_parser("stop", help="end the session (an event; the recording is kept)",
                       description="Stop the running session cleanly, wait until it is closed and signed, "
                                   "then print 'saved: <folder>' and the verify result. Stopping is an event; "
                                   "nothing is deleted.")
    t.add_argument("--timeout", type=float, default=60.0, metavar="S", help="how long to wait for the session to close")
    _socket_args(t)
    t.set_defaults(func=cmd_stop)
    ph = sub.add_parser("photo", help="take a still from a camera during the session",
                        description="Save a JPEG still (hashed in the manifest) from the candidate's camera, "
                                    "or the examiner's, or a named stream.")
    ph.add_argument("--role", choices=("candidate", "examiner"), default="candidate")
    ph.add_argument("--stream", help="take it from this stream instead")
    _socket_args(ph)
    ph.set_defaults(func=lambda a: _send(a, {"cmd": "photo", "role": a.role, "stream": a.stream}))


def _socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return args.socket
    if args.profile:
        return socket_path(load_profile(args.profile))
    return find_socket()


def _ask(args: argparse.Namespace, payload: dict) -> tuple[int, dict]:
    try:
        answer = request(_socket(args), payload)
    except SeveralRecorders as exc:
        print(f"examrec: {exc}", file=sys.stderr)
        return exitcodes.USAGE, {}
    except NoRecorder as exc:
        print(f"examrec: {exc}", file=sys.stderr)
        return exitcodes.UNREACHABLE, {}
    if not answer.get("ok"):
        if args.json:
            print(json.dumps(answer, ensure_ascii=False, indent=2))
        print(f"examrec: refused: {answer.get('error')}", file=sys.stderr)
        return exitcodes.REFUSED, answer
    return exitcodes.OK, answer


def _send(args: argparse.Namespace, payload: dict) -> int:
    code, answer = _ask(args, payload)
    if code == exitcodes.OK:
        if args.json:
            print(json.dumps(answer, ensure_ascii=False, indent=2))
        else:
            print(", ".join(f"{k}: {v}" for k, v in answer.items() if k != "ok"))
    return code


def pick_reason(given: str | None, reasons: list[str]) -> str | None:
    """The pause reason: typed text, a number from the profile's list, or (on a terminal) asked."""
    if given and given.strip().isdigit() and reasons:
        n = int(given.strip())
        return reasons[n - 1] if 1 <= n <= len(reasons) else None
    if given:
        return given.strip()
    if not sys.stdin.isatty() or not reasons:
        return None
    for i, r in enumerate(reasons, start=1):
        print(f"  {i}. {r}", file=sys.stderr)
    answer = input("reason (number or text): ").strip()
    return pick_reason(answer, reasons) if answer else None


def cmd_pause(args: argparse.Namespace) -> int:
    code, st = _ask(args, {"cmd": "status"})
    if code != exitcodes.OK:
        return code
    reasons = list(st.get("pause_reasons") or [])
    reason = pick_reason(args.reason, reasons)
    if not reason:
        listed = "; ".join(f"{i}. {r}" for i, r in enumerate(reasons, start=1))
        print(f"examrec: pause needs a reason: --reason TEXT or --reason N from the profile's list ({listed})",
              file=sys.stderr)
        return exitcodes.USAGE
    return _send(args, {"cmd": "pause", "reason": reason, "plate": args.plate})


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop, wait for the session to be closed and signed, then say where it is and whether it verifies."""
    code, answer = _ask(args, {"cmd": "stop"})
    if code != exitcodes.OK:
        return code
    folder = Path(answer["session"])
    sock = _socket(args)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            st = request(sock, {"cmd": "status"}, timeout=5)
        except NoRecorder:
            break  # a one-shot `record` ends with its session
        if st.get("state") not in ("recording", "paused", "stopping") or st.get("session") != str(folder):
            break
        time.sleep(0.2)
    else:
        print(f"examrec: the session {folder} did not close within {args.timeout:g} s", file=sys.stderr)
        return exitcodes.FAILED
    from sessions.evidence.verify import NotASession, verify_session
    try:
        report = verify_session(folder)
        ok, detail = report.ok, ("ok" if report.ok else "; ".join(str(p) for p in report.problems[:3]))
    except NotASession as exc:
        ok, detail = False, str(exc)
    if args.json:
        print(json.dumps({"saved": str(folder), "session_id": answer.get("session_id"), "verify_ok": ok,
                          "verify": detail}, ensure_ascii=False, indent=2))
    else:
        print(f"saved: {folder}")
        print(f"verify: {detail}")
    return exitcodes.OK if ok else exitcodes.FAILED


def cmd_status(args: argparse.Namespace) -> int:
    code, st = _ask(args, {"cmd": "status"})
    if code != exitcodes.OK:
        return code
    if args.json:
        print(json.dumps(st, ensure_ascii=False, indent=2))
        return code
    extra = f"  paused at {st['paused_at']}" if st.get("paused_at") else ""
    print(f"{st['state'].upper()}  stage {st['stage']}  {st['elapsed']}{extra}  session {st['session_id'] or '-'}"
          + ("  DEMO" if st.get("demo") else ""))
    if st.get("console_url"):
        print(f"console: {st['console_url']}")
    table = format_table(st["streams"], ["stream", "state", "health", "fps", "frames", "dropped", "mb"]) if st["streams"] else ""
    if sys.stdout.isatty():  # a stream that is not recording shows red on the examiner's terminal
        lines = table.splitlines()
        for i, s in enumerate(st["streams"], start=1):
            if s["health"] != "ok" and i < len(lines):
                lines[i] = f"\033[1;31m{lines[i]}\033[0m"
        table = "\n".join(lines)
    print(table)
    for key in ("gps", "pedals"):
        if st.get(key):
            print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in st[key].items()))
    if st.get("disk_free_gb") is not None:
        print(f"disk free: {st['disk_free_gb']} GB")
    if st.get("uploads_overdue"):
        late = st["uploads_overdue"]
        print(f"uploads overdue: {len(late)} session(s) past the next working day ({', '.join(late[:3])}"
              f"{', ...' if len(late) > 3 else ''}): run `examrec upload`")
    faulty = [s["stream"] for s in st["streams"] if s["health"] != "ok"]
    return exitcodes.FAILED if faulty else exitcodes.OK
