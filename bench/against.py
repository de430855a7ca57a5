"""This tree's recorder against an earlier revision's, in turn, on a load that fits the machine.

Near the machine's capacity the figures of one run are mostly the machine's mood (drops, full
queues, the CPU of frames drawn and dropped). On a load that fits, CPU per frame and peak PSS are
the recorder's own: this records the lighter load of bench/vehicle.py (1 x 1920x1080@25 + 3 x
1280x720@25 + sound) for --seconds with the revision's code and with this tree's, --pairs times,
alternating which goes first, and prints the medians and the ratio this/earlier. The revision is
checked out into a temporary worktree and run with this tree's Python environment.
Results: bench/results/against-REV.json.  Usage: python bench/against.py REV [--seconds 60] [--pairs 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from proctree import machine, save_results  # bench/ is the script's folder
from throughput import LIGHTER, RESULTS, ROOT, run_ours, table

FIGURES = ("cpu_s_per_frame", "cpu_percent_of_machine", "peak_pss_mb", "peak_rss_mb", "dropped")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="the earlier revision (a commit, tag or branch)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    before = machine()
    runs: dict[str, list[dict]] = {"earlier": [], "this": []}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        old = tmp / "earlier"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), commit], cwd=ROOT, check=True)
        try:
            for k in range(args.pairs):
                for which in (("earlier", "this") if k % 2 == 0 else ("this", "earlier")):
                    print(f"pair {k + 1}: {which} ({commit if which == 'earlier' else 'this tree'}) "
                          f"recording {args.seconds:g} s...", file=sys.stderr)
                    run = tmp / f"{which}{k}"
                    run.mkdir()
                    runs[which].append(run_ours(args.seconds, run, LIGHTER, code=old if which == "earlier" else ROOT))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)
    after = machine()
    med = {w: {f: statistics.median(r[f] for r in rs) for f in FIGURES} for w, rs in runs.items()}
    rows = [[f, round(med["earlier"][f] * (1000 if f == "cpu_s_per_frame" else 1), 2),
             round(med["this"][f] * (1000 if f == "cpu_s_per_frame" else 1), 2),
             round(med["this"][f] / med["earlier"][f], 3) if med["earlier"][f] else "-"] for f in FIGURES]
    print(table(rows, ["figure (median)", f"earlier ({commit})", "this tree", "this/earlier"]))
    print("(cpu_s_per_frame in ms)")
    save_results(RESULTS / f"against-{commit}.json",
                 {"earlier": commit, "seconds": args.seconds, "pairs": args.pairs,
                  "load": [f"{n} {w}x{h}@{f}" for n, w, h, f in LIGHTER], "medians": med, "runs": runs}, before, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
