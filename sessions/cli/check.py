"""`examrec check`: the pre-exam checks on their own (record runs them too before it starts)."""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from sessions import exitcodes
from sessions.recorder.checks import failed_mandatory, results_table
from core.profile import load_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check every device, the clock, power and disk before an exam",
                       description="Run the pre-exam checks of a profile: each stream delivers frames at its rate "
                                   "through the recorder (2 s sample), the machine's CPU share the streams need stays "
                                   "within [checks] max_cpu_percent (the headroom a whole exam needs to drop no "
                                   "frame), the sound is not silent, GPS fix and clock "
                                   "offset, pedal heartbeat, free disk for the profile's min_record_h at the "
                                   "measured bitrate, output folder writable, battery/power. Exit 0 when every "
                                   "mandatory check passes, 1 otherwise. Nothing is recorded.")
    p.add_argument("--profile", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="output root to check (default: the profile's `out`)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does) while inside, so cleanup code runs
    instead of the process vanishing with its children still running."""
    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def cmd_check(args: argparse.Namespace) -> int:
    # imported here: the recorder brings PyAV, OpenCV and numpy (0.5 s), which other commands don't need
    from sessions.recorder.controller import Recorder
    profile = load_profile(args.profile)
    out_root = args.out or profile.resolve(profile.out)
    with tempfile.TemporaryDirectory(prefix="examrec-check-") as scratch, interrupts_raise():
        rec = Recorder(profile, Path(scratch))
        try:
            rec.prepare()
            rec.out_root = out_root  # the disk and folder checks are about where sessions will go
            results = rec.run_checks()
        finally:
            # On every path (a failed check, an error, SIGTERM or Ctrl-C): the stream processes
            # and the replay devices end, and the scratch folder goes.
            rec.abort({})
    failed = failed_mandatory(results)
    if args.json:
        print(json.dumps({"ok": not failed, "profile": profile.name, "checks": [r.to_json() for r in results]},
                         indent=2, ensure_ascii=False))
    else:
        print(results_table(results))
        print(f"\n{'OK: ready to record' if not failed else f'FAILED: {len(failed)} check(s) failed'}")
    return exitcodes.FAILED if failed else exitcodes.OK
