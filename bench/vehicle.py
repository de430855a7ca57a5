"""Vehicle rounds: the vehicle load recorded for whole exams, and whether the pre-exam check foresaw it.

A 60-s round (bench/throughput.py) can keep up and an exam still lose frames: near the machine's
capacity a keyframe, an fsync or another process at a bad moment overflows a queue. So, for
  - the vehicle load (4 x 1920x1080@25 + 1 x 1280x720@25 + sound, as in throughput.py),
  - a lighter load (1 x 1920x1080@25 + 3 x 1280x720@25 + sound: what hw-profiles/vehicle.toml
    says a 2-core mini PC carries), and
  - an overload (the vehicle load and two more 1920x1080@25 streams),
so that whichever way the machine goes, both of the check's verdicts are put to the test, this runs
  1. `examrec check` on the load's profile: the processor check's verdict and the CPU share of the
     machine it measured in its 2 s,
  2. recordings of the load in real time (--rounds of --minutes for the vehicle load, one of
     --minutes for the lighter load, one of --overload-minutes for the overload), each sampled as
     in throughput.py: CPU % of the machine, peak PSS, frames and dropped frames per stream.
The check foresaw the result when it passed and no round dropped a frame, or failed and one did.
All of it, with the machine's CPU model and load average, goes to bench/results/vehicle.json.
Usage: python bench/vehicle.py [--minutes 10] [--rounds 3] [--overload-minutes 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from proctree import machine, save_results  # bench/ is the script's folder
from throughput import LIGHTER, RESULTS, ROOT, STREAMS, bench_profile, run_ours, table

OVERLOAD = STREAMS + [("cam6", 1920, 1080, 25), ("cam7", 1920, 1080, 25)]


def run_check(streams: list[tuple[str, int, int, int]], tmp: Path) -> dict:
    """`examrec check --json` on the load: its verdict and the processor check's figures."""
    tmp.mkdir(parents=True, exist_ok=True)
    profile = bench_profile(tmp, streams)
    proc = subprocess.run([sys.executable, "-m", "sessions.cli", "check", "--profile", str(profile), "--json",
                           "--out", str(tmp)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"examrec check failed ({proc.returncode}): {proc.stderr[-2000:]}")
    answer = json.loads(proc.stdout)
    processor = next((c for c in answer["checks"] if c["check"] == "processor"), None)
    if processor is None:
        raise SystemExit(f"examrec check measured no processor share: {proc.stdout[-2000:]}")
    return {"ok": processor["ok"], "detail": processor["detail"], **processor["figures"],
            "failed": [c["check"] for c in answer["checks"] if not c["ok"]]}


def run_load(label: str, streams: list[tuple[str, int, int, int]], rounds: int, minutes: float) -> dict:
    with tempfile.TemporaryDirectory() as t:
        print(f"{label}: examrec check...", file=sys.stderr)
        check = run_check(streams, Path(t) / "check")
    out = {"load": label, "streams": [f"{n} {w}x{h}@{fps}" for n, w, h, fps in streams], "check": check,
           "rounds": []}
    for k in range(rounds):
        print(f"{label}: round {k + 1} of {rounds}, recording {minutes:g} min in real time...", file=sys.stderr)
        with tempfile.TemporaryDirectory() as t:  # a round's recording goes with it: 10 minutes are gigabytes
            r = run_ours(minutes * 60, Path(t), streams)
        out["rounds"].append(r)
        print(f"{label}: round {k + 1}: {r['dropped']} dropped of {r['frames'] + r['dropped']}, "
              f"{r['cpu_percent_of_machine']} % CPU, peak PSS {r['peak_pss_mb']} MB", file=sys.stderr)
    dropped_any = any(r["dropped"] for r in out["rounds"])
    out["foreseen"] = check["ok"] != dropped_any
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of each vehicle round")
    ap.add_argument("--rounds", type=int, default=3, help="vehicle rounds")
    ap.add_argument("--overload-minutes", type=float, default=2.0,
                    help="length of the overload's one round (0: no overload)")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    before = machine()
    loads = [run_load("vehicle", STREAMS, args.rounds, args.minutes), run_load("lighter", LIGHTER, 1, args.minutes)]
    if args.overload_minutes > 0:
        loads.append(run_load("overload", OVERLOAD, 1, args.overload_minutes))
    after = machine()
    rows = []
    for load in loads:
        c = load["check"]
        for k, r in enumerate(load["rounds"]):
            rows.append([load["load"], f'{len(load["streams"])} streams',
                         ("passed" if c["ok"] else "FAILED") + f' ({c["cpu_percent"]:.0f} % of {c["max_cpu_percent"]:g})',
                         k + 1, f'{r["seconds"] / 60:g}', r["cpu_percent_of_machine"], r["peak_pss_mb"],
                         f'{r["dropped"]} of {r["frames"] + r["dropped"]}',
                         "yes" if load["foreseen"] else "NO"])
    print(table(rows, ["load", "streams", "pre-exam check", "round", "minutes", "CPU % of machine", "peak PSS MB",
                       "dropped", "check foresaw it"]))
    vehicle = loads[0]
    print(f"\nvehicle load: {sum(r['dropped'] for r in vehicle['rounds'])} frames dropped in "
          f"{len(vehicle['rounds'])} rounds of {args.minutes:g} min (target 0); the check foresaw "
          f"{'every' if all(x['foreseen'] for x in loads) else 'NOT every'} load's result")
    save_results(RESULTS / "vehicle.json", {"loads": loads, "minutes": args.minutes, "rounds": args.rounds,
                                            "overload_minutes": args.overload_minutes}, before, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
