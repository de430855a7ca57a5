"""Where the memory goes: the bench load recorded by examrec, each process's memory taken apart.

Starts the vehicle load of bench/throughput.py (4 x 1920x1080@25 + 1 x 1280x720@25 + audio,
replay pictures, x264 ultrafast) through `examrec record`, waits --wait seconds (default 20), and
reads for the controller and every stream process: RSS, PSS, USS (/proc/PID/smaps_rollup) and
PSS per kind of mapping (/proc/PID/smaps): anonymous memory (Python objects, numpy arrays,
encoder buffers, thread stacks), libx264, FFmpeg's libraries, OpenCV, numpy, Python itself,
other libraries and files. Per stream process it adds what the parts it holds should take: the
frame queue when full (queue_frames x one BGR frame), the replay pattern's pictures (in the car
a camera needs none of them), and the encoder with its muxer (measured alone in a fresh process:
anonymous memory after 100 frames minus before the encoder opened). Then the same for the five
paced ffmpeg processes of the bench, for comparison. Prints a table, writes
bench/results/memory.json.  Usage: python bench/memory.py [--wait 20]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from proctree import machine, process_table, rollup_kb, save_results, tree_pids, uss_kb  # bench/ is the script's folder
from throughput import (RESULTS, ROOT, STREAMS, X264, bench_profile, ffmpeg_paced_commands, make_raw_frames,
                        record_command, table)

from sessions.evidence.layout import EVENTS_NAME

# Mapping kinds, first match wins: a path is tested against each kind's fragments in order.
PICTURES = "replay pictures"
KINDS: list[tuple[str, tuple[str, ...]]] = [
    (PICTURES, ("examrec/replay/pattern-", "examrec-replay-")),  # capture.replay.shared_pictures' files
    ("libx264", ("libx264",)),
    ("FFmpeg libs", ("libavcodec", "libavformat", "libavutil", "libavfilter", "libavdevice", "libswscale",
                     "libswresample", "libpostproc")),
    ("PyAV + codecs", ("/av/", "av.libs/")),
    ("OpenCV", ("cv2", "opencv")),
    ("numpy", ("numpy",)),
    ("other extensions", ("site-packages/",)),
    ("Python", ("python3", "libpython", "lib-dynload")),
]
ANON = "anonymous"
OTHER_LIBS = "other libs"
FILES = "other files"
COLUMNS = [ANON, PICTURES, "libx264", "FFmpeg libs", "PyAV + codecs", "OpenCV", "numpy", "other extensions", "Python",
           OTHER_LIBS, FILES]


def kind_of(path: str) -> str:
    """Which kind of memory a mapping of ``path`` is (an empty path is anonymous memory)."""
    if not path or path.startswith("[heap]") or path.startswith("[stack") or path.startswith("[anon"):
        return ANON
    for kind, fragments in KINDS:
        if any(f in path for f in fragments):
            return kind
    return OTHER_LIBS if ".so" in path else FILES


def breakdown_kb(pid: int) -> dict[str, int]:
    """PSS (kB) of one process by kind of mapping, from /proc/PID/smaps; {} once it has ended."""
    out = {k: 0 for k in COLUMNS}
    kind = FILES
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 1)[0]
                if not first.endswith(":"):       # a mapping's header: "start-end perms offset dev inode path"
                    parts = line.split(None, 5)
                    kind = kind_of(parts[5].strip() if len(parts) > 5 else "")
                elif first == "Pss:":
                    out[kind] += int(line.split()[1])
    except OSError:
        return {}
    return out


def process_memory(pid: int) -> dict:
    """RSS, PSS, USS, anonymous memory and the PSS breakdown of one process, in MB."""
    roll, parts = rollup_kb(pid), breakdown_kb(pid)
    mb = lambda kb: round(kb / 1024, 1)
    return {"pid": pid, "rss_mb": mb(roll.get("Rss", 0)), "pss_mb": mb(roll.get("Pss", 0)), "uss_mb": mb(uss_kb(roll)),
            "anonymous_mb": mb(roll.get("Anonymous", 0)), "pss_by_kind_mb": {k: mb(v) for k, v in parts.items()}}


def stream_of(pid: int, session: Path) -> str | None:
    """The stream a recorder process writes: the folder under the session its open files are in."""
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = Path(os.readlink(fd))
            except OSError:
                continue
            if target.parent.parent == session and target.parent.name in {n for n, *_ in STREAMS}:
                return target.parent.name
    except OSError:
        pass
    return None


def role_of(pid: int, root: int, session: Path | None) -> str:
    if pid == root:
        return "controller"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    name = stream_of(pid, session) if session else None
    return f"stream {name}" if name else "other"


def replay_picture_mb(w: int, h: int) -> float:
    """What a replay pattern source maps: a canvas twice the frame's width and its noise field
    (one file of each a size, shared by the sources of that size: see capture.replay)."""
    from capture.replay import NOISE_MARGIN
    return round((h * 2 * w * 3 + (h + NOISE_MARGIN) * (w + NOISE_MARGIN) * 3) / 2**20, 1)


def probe_encoder(w: int, h: int) -> dict:
    """In this (fresh) process: the anonymous memory of the interpreter with a stream process's
    imports; what the real segment writer (BGR -> I420, libx264, fragmented MP4 muxer, file)
    adds by opening and encoding 100 frames of ``w`` x ``h``; and what three writers opened and
    closed in turn leave behind, with and without a garbage collection after each close (a
    closed writer and its file refer to each other: only the cyclic collector frees them)."""
    anon = lambda: rollup_kb(os.getpid()).get("Anonymous", 0)
    mb = lambda kb: round(kb / 1024, 1)
    from sessions.recorder.stream.heap import give_back_free_memory as trim
    import cv2
    import capture.factory  # noqa: F401  (what a stream process imports)
    import sessions.recorder.stream.process  # noqa: F401
    from capture.replay import PatternSource
    from core.clock import SessionClock
    from core.profile import EncoderSpec
    from muxer.segment import SegmentSettings, SegmentWriter
    imports = anon()
    cv2.setNumThreads(1)
    clock = SessionClock.start_now()
    src = PatternSource("probe", w, h, 25, realtime=False)
    src.open()
    src.start(clock)
    frames = [src.read() for _ in range(10)]
    settings = SegmentSettings(w, h, 25, EncoderSpec(preset=X264["preset"], crf=X264["crf"]), X264["gop"])
    made = 0

    def writer_with(n: int, folder: Path) -> SegmentWriter:
        nonlocal made
        made += 1
        writer = SegmentWriter(folder / f"probe{made}.mp4", f"probe{made}.mp4", settings, clock)
        for k in range(n):
            f = frames[k % len(frames)]
            writer.write_video(f.image.copy(), clock.start_ns + k * 40_000_000)
        return writer

    def in_turn(folder: Path, collect: bool) -> float:
        gc.collect()
        trim()
        start = anon()
        for _ in range(3):
            writer_with(30, folder).close()  # the writer is unreferenced from here on
            if collect:
                gc.collect()
        return mb(anon() - start)

    with tempfile.TemporaryDirectory() as t:
        gc.collect()
        before = anon()
        writer = writer_with(1, Path(t))
        first = anon()
        for k in range(1, 101):
            f = frames[k % len(frames)]
            writer.write_video(f.image.copy(), clock.start_ns + (100 + k) * 40_000_000)
        after = anon()
        writer.close()
        del writer
        with_gc = in_turn(Path(t), collect=True)
        without_gc = in_turn(Path(t), collect=False)
    return {"size": f"{w}x{h}", "interpreter_and_imports_anon_mb": mb(imports),
            "anon_growth_first_frame_mb": mb(first - before), "anon_growth_100_frames_mb": mb(after - before),
            "three_writers_in_turn_mb": {"gc_collect_after_each_close": with_gc, "no_collection": without_gc}}


def measure_recorder(wait_s: float, tmp: Path) -> dict:
    """examrec recording the load; every process taken apart after ``wait_s`` seconds."""
    from core.profile import load_profile
    profile_path = bench_profile(tmp)
    profile = load_profile(profile_path)
    out = tmp / "out"
    proc = subprocess.Popen(record_command(profile_path, wait_s + 15, out), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    anon_now: dict[int, int] = {}
    anon_at_start: dict[int, int] = {}
    started = threading.Event()
    done = threading.Event()
    session: list[Path] = []

    def watch() -> None:
        # Anonymous memory of every process, until the session starts (the encoders open then).
        while not done.is_set():
            for pid in tree_pids([proc.pid]):
                anon_now[pid] = rollup_kb(pid).get("Anonymous", anon_now.get(pid, 0))
            events = list(out.glob(f"*/*/{EVENTS_NAME}"))
            if events and '"type":"start"' in events[0].read_text():
                session.append(events[0].parent)
                anon_at_start.update(anon_now)
                started.set()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    if not started.wait(120):
        proc.kill()
        raise SystemExit(f"the recorder never started: {proc.communicate()[1][-2000:]}")
    time.sleep(wait_s)
    table_ = process_table()
    procs = []
    for pid in tree_pids([proc.pid], table_):
        row = {"process": role_of(pid, proc.pid, session[0]), **process_memory(pid)}
        if pid in anon_at_start:
            row["anon_growth_since_start_mb"] = round(row["anonymous_mb"] - anon_at_start[pid] / 1024, 1)
        name = row["process"].removeprefix("stream ")
        if row["process"].startswith("stream "):
            spec = profile.stream(name)
            frame_mb = spec.width * spec.height * 3 / 2**20
            row["frame_queue_full_mb"] = round(spec.queue_frames * frame_mb, 1)
            row["queue_frames"] = spec.queue_frames
            row["size"] = f"{spec.width}x{spec.height}"
            row["replay_pictures_mapped_mb"] = replay_picture_mb(spec.width, spec.height)
            row["replay_pictures_mb"] = row["pss_by_kind_mb"][PICTURES]  # its share of the mapped files
        procs.append(row)
    proc.send_signal(2)  # SIGINT: the recorder ends the session cleanly
    proc.communicate(timeout=60)
    done.set()
    procs.sort(key=lambda r: r["process"])
    return {"processes": procs, "exit": proc.returncode}


def measure_ffmpeg(wait_s: float, tmp: Path) -> dict:
    """The five paced ffmpeg processes of the bench, each taken apart after ``wait_s`` seconds."""
    raw, _ = make_raw_frames(tmp)
    out = tmp / "ffmpeg"
    out.mkdir()
    cmds = ffmpeg_paced_commands(wait_s + 15, out, raw)
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    time.sleep(wait_s)
    rows = [{"process": f"ffmpeg {name}", **process_memory(p.pid)} for p, (name, *_) in zip(procs, STREAMS)]
    for p in procs:
        p.terminate()
        p.wait()
    return {"processes": rows}


def totals(rows: list[dict]) -> dict:
    return {k: round(sum(r[k] for r in rows), 1) for k in ("rss_mb", "pss_mb", "uss_mb", "anonymous_mb")}


def account(recorder: list[dict], encoders: list[dict]) -> None:
    """Adds to each stream process's row what its parts should take and what is left over."""
    by_size = {e["size"]: e for e in encoders}
    for r in recorder:
        if "frame_queue_full_mb" not in r:
            continue
        e = by_size[r["size"]]
        r["interpreter_and_imports_mb"] = e["interpreter_and_imports_anon_mb"]
        r["encoder_and_muxer_mb"] = e["anon_growth_100_frames_mb"]
        # (the replay pictures are file mappings shared by the sources of a size, not anonymous memory)
        r["rest_mb"] = round(r["anonymous_mb"] - r["interpreter_and_imports_mb"]
                             - r["encoder_and_muxer_mb"] - r["frame_queue_full_mb"], 1)


def print_table(recorder: list[dict], ffmpeg: list[dict], encoders: list[dict]) -> None:
    rows = []
    for r in recorder + ffmpeg:
        kinds = r["pss_by_kind_mb"]
        rows.append([r["process"], r["rss_mb"], r["pss_mb"], r["uss_mb"], *(kinds.get(k, 0) for k in COLUMNS)])
    for label, group in (("examrec total", recorder), ("ffmpeg total", ffmpeg)):
        t = totals(group)
        rows.append([label, t["rss_mb"], t["pss_mb"], t["uss_mb"],
                     *(round(sum(r["pss_by_kind_mb"].get(k, 0) for r in group), 1) for k in COLUMNS)])
    print("MB; the kinds split PSS")
    print(table(rows, ["process", "RSS", "PSS", "USS", *COLUMNS]))
    print()
    est = [[r["process"], r["anonymous_mb"], r["interpreter_and_imports_mb"],
            r["encoder_and_muxer_mb"], f'{r["frame_queue_full_mb"]} ({r["queue_frames"]})', r["rest_mb"],
            r.get("anon_growth_since_start_mb", "-")]
           for r in recorder if "frame_queue_full_mb" in r]
    print("anonymous memory of each stream process (MB) and what should take it:")
    print(table(est, ["stream process", "anonymous", "interpreter+imports", "encoder+muxer",
                      "queue full (frames)", "rest", "growth since start"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wait", type=float, default=20.0, help="seconds of recording before memory is read")
    ap.add_argument("--probe-encoder", nargs=2, type=int, metavar=("W", "H"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe_encoder:  # the child that measures one encoder alone
        print(json.dumps(probe_encoder(*args.probe_encoder)))
        return 0
    before = machine()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        print(f"recording the bench load for {args.wait:.0f} s...", file=sys.stderr)
        recorder = measure_recorder(args.wait, tmp)
        print(f"five paced ffmpeg processes for {args.wait:.0f} s...", file=sys.stderr)
        ffmpeg = measure_ffmpeg(args.wait, tmp)
    encoders = [json.loads(subprocess.run([sys.executable, __file__, "--probe-encoder", str(w), str(h)], cwd=ROOT,
                                          check=True, capture_output=True, text=True).stdout)
                for w, h in sorted({(w, h) for _, w, h, _ in STREAMS})]
    after = machine()
    account(recorder["processes"], encoders)
    print_table(recorder["processes"], ffmpeg["processes"], encoders)
    print("(interpreter+imports and encoder+muxer: measured alone in a fresh process; queue full: queue_frames x "
          "one BGR frame; rest: frames in flight, the queue's real fill, what malloc keeps)")
    print()
    print(table([[e["size"], e["anon_growth_100_frames_mb"], e["three_writers_in_turn_mb"]["no_collection"],
                  e["three_writers_in_turn_mb"]["gc_collect_after_each_close"]] for e in encoders],
                ["segment writer alone (MB)", "open, 100 frames", "3 opened and closed in turn",
                 "the same, gc.collect() after each close"]))
    rec_t, ff_t = totals(recorder["processes"]), totals(ffmpeg["processes"])
    pictures = round(sum(r.get("replay_pictures_mb", 0) for r in recorder["processes"]), 1)
    print(f"\nPSS examrec / ffmpeg paced: {rec_t['pss_mb']} / {ff_t['pss_mb']} MB = {rec_t['pss_mb'] / ff_t['pss_mb']:.2f}; "
          f"less the replay pictures' share ({pictures} MB of PSS: files mapped by the sources of a size, which "
          f"ffmpeg reads from a file and a camera never needs): "
          f"{(rec_t['pss_mb'] - pictures) / ff_t['pss_mb']:.2f}")
    save_results(RESULTS / "memory.json",
                 {"wait_s": args.wait, "recorder": recorder["processes"], "recorder_total": rec_t,
                  "ffmpeg_paced": ffmpeg["processes"], "ffmpeg_paced_total": ff_t, "encoder_alone": encoders,
                  "pss_ratio": round(rec_t["pss_mb"] / ff_t["pss_mb"], 3), "replay_pictures_mb": pictures,
                  "pss_ratio_less_replay_pictures": round((rec_t["pss_mb"] - pictures) / ff_t["pss_mb"], 3)},
                 before, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
