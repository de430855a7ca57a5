"""Throughput benchmark: a vehicle-sized load through examrec, against ffmpeg and the bare encoder.

Load: 4 x 1920x1080@25 + 1 x 1280x720@25 + audio from replay sources, in real time (default 60 s).
Prints per-stream fps and drops, CPU % of the machine, peak RSS; then CPU seconds per frame for
  - ours        the whole recorder (capture, overlay, convert, encode, mux, fsync, hashing)
  - ffmpeg      the ffmpeg CLI doing the same sizes, frame counts and x264 settings
                (lavfi testsrc2 + drawtext + libx264 + fragmented MP4), one process per stream
  - ffmpeg-raw  the same, fed our own replay pictures as rawvideo (the fairer picture)
  - bare        PyAV's libx264 alone on pre-made frames of ours
each measured --repeat times (default 3; medians reported), and writes
bench/results/throughput.json.  Usage: python bench/throughput.py [--seconds 60] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

from sessions.evidence.layout import EVENTS_NAME

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STREAMS = [("cam1", 1920, 1080, 25), ("cam2", 1920, 1080, 25), ("cam3", 1920, 1080, 25), ("cam4", 1920, 1080, 25),
           ("cam5", 1280, 720, 25)]
X264 = {"preset": "ultrafast", "crf": 23, "gop": 50}


def bench_profile(tmp: Path) -> Path:
    lines = [f'name = "bench"\nkind = "replay"\nsegment_s = 300\n',
             f'[encoder]\npreset = "{X264["preset"]}"\ncrf = {X264["crf"]}\ngop = {X264["gop"]}\n']
    for i, (name, w, h, fps) in enumerate(STREAMS):
        audio = f'audio = "wav:{ROOT}/bench/fixtures/cabin.wav"\n' if i == 0 else ""
        lines.append(f'[[streams]]\nname = "{name}"\nsource = "pattern:"\nwidth = {w}\nheight = {h}\nfps = {fps}\n{audio}')
    path = tmp / "bench.toml"
    path.write_text("\n".join(lines))
    return path


def tree_rss_kb(root_pid: int) -> int:
    """Resident memory of a process and all its descendants (kB)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        todo += children.get(pid, [])
    return total


def tree_cpu_s(root_pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            stats[int(d.name)] = fields
            children.setdefault(int(fields[1]), []).append(int(d.name))
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += (int(stats[pid][11]) + int(stats[pid][12])) / tick  # utime, stime
        todo += children.get(pid, [])
    return total


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_ours(seconds: float, tmp: Path) -> dict:
    profile = bench_profile(tmp)
    before = cpu_children()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "sessions.cli", "record", "--profile", str(profile),
                             "--duration", str(seconds), "--out", str(tmp / "out"), "--json",
                             "--force"],  # an overloaded machine fails the rate check: measure anyway
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    at_start: float | None = None  # CPU spent before recording began: imports, pre-exam checks
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, at_start
        while not stop.is_set():
            if at_start is None and any('"type":"start"' in p.read_text() for p in (tmp / "out").glob(f"*/*/{EVENTS_NAME}")):
                at_start = tree_cpu_s(proc.pid)
            peak = max(peak, tree_rss_kb(proc.pid))
            time.sleep(0.05 if at_start is None else 0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    wall = time.monotonic() - t0
    if at_start is None:
        raise SystemExit("the recorder never logged its start")
    # Only what recording cost: the checks before it encode 2 s of every stream that no table counts.
    cpu = cpu_children() - before - at_start
    wall = seconds
    if proc.returncode != 0:
        raise SystemExit(f"recorder failed ({proc.returncode}): {err[-2000:]}")
    manifest = json.loads(out)
    streams = []
    frames_total = 0
    for s in manifest["streams"]:
        frames = sum(x["frames"] for x in s["segments"])
        dropped = sum(x["dropped"] for x in s["segments"])
        frames_total += frames
        streams.append({"stream": s["name"], "size": f'{s["width"]}x{s["height"]}', "fps": round(frames / seconds, 2),
                        "target_fps": s["fps"], "dropped": dropped})
    return {"seconds": seconds, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "frames": frames_total,
            "cpu_percent_of_2_cores": round(100 * cpu / (wall * os.cpu_count()), 1),
            "cpu_s_per_frame": cpu / frames_total, "peak_rss_mb": round(peak / 1024, 1), "streams": streams}


def _ffmpeg_x264_args(out: Path) -> list[str]:
    return ["-c:v", "libx264", "-preset", X264["preset"], "-crf", str(X264["crf"]), "-g", str(X264["gop"]),
            "-threads", "1", "-pix_fmt", "yuv420p", "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
            "-frag_duration", "200000", "-flush_packets", "1", "-f", "mp4", str(out)]


DRAWTEXT = ("drawtext=text='%{localtime\\:%Y-%m-%d %H\\\\\\:%M\\\\\\:%S}  %{pts\\:hms}':"
            "x=10:y=10:fontsize=32:fontcolor=white:box=1:boxcolor=black")


def run_ffmpeg(seconds: float, tmp: Path, raw_frames: dict | None = None) -> dict:
    """One ffmpeg process per stream, all at once (as ours runs), as fast as they go."""
    procs = []
    before = cpu_children()
    frames_total = 0
    for name, w, h, fps in STREAMS:
        n = int(seconds * fps)
        frames_total += n
        if raw_frames is None:
            src = ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}"]
        else:
            src = ["-stream_loop", "-1", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", str(fps),
                   "-i", str(raw_frames[(w, h)])]
        cmd = ["ffmpeg", "-v", "error", "-y", "-filter_threads", "1", *src, "-frames:v", str(n), "-vf", DRAWTEXT,
               *_ffmpeg_x264_args(tmp / f"ff-{name}.mp4")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"ffmpeg failed: {err[-1000:]}")
    cpu = cpu_children() - before
    return {"frames": frames_total, "cpu_s": round(cpu, 2), "cpu_s_per_frame": cpu / frames_total}


def make_raw_frames(tmp: Path, count: int = 50) -> dict:
    """Our replay pattern's pictures written once as rawvideo, for ffmpeg and the bare encoder."""
    from capture.replay import PatternSource
    from core.clock import SessionClock
    clock = SessionClock.start_now()
    files = {}
    for w, h in {(w, h) for _, w, h, _ in STREAMS}:
        src = PatternSource("cam", w, h, 25, realtime=False)
        src.open()
        src.start(clock)
        path = tmp / f"pattern-{w}x{h}.bgr"
        with open(path, "wb") as f:
            for _ in range(count):
                f.write(src.read().image.tobytes())
        files[(w, h)] = path
    return files


def run_bare(raw: dict, frames_per_size: int = 250) -> dict:
    """PyAV + libx264 (same settings, one thread) encoding pre-made frames: the floor."""
    import av
    import cv2
    import numpy as np
    cv2.setNumThreads(1)
    total_cpu, total = 0.0, 0
    for (w, h), path in raw.items():
        data = np.fromfile(path, np.uint8).reshape(-1, h, w, 3)
        per_stream = sum(1 for _, sw, sh, _ in STREAMS if (sw, sh) == (w, h))
        out = av.open(os.devnull, "w", format="mp4", options={"movflags": "+frag_keyframe+empty_moov", "frag_duration": "200000"})
        st = out.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.codec_context.thread_count = 1
        st.codec_context.gop_size = X264["gop"]
        st.options = {"preset": X264["preset"], "crf": str(X264["crf"])}
        t0 = time.process_time()
        for i in range(frames_per_size):
            frame = av.VideoFrame.from_numpy_buffer(cv2.cvtColor(data[i % len(data)], cv2.COLOR_BGR2YUV_I420), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
        out.close()
        cpu = time.process_time() - t0
        total_cpu += cpu * per_stream  # weight by how many streams have this size
        total += frames_per_size * per_stream
    return {"frames": total, "cpu_s": round(total_cpu, 2), "cpu_s_per_frame": total_cpu / total}


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def _median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["cpu_s_per_frame"])
    return ordered[len(ordered) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of every measurement; medians are reported")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rounds = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        raw = None
        for k in range(args.repeat):
            rt = tmp / f"round{k}"
            rt.mkdir()
            print(f"round {k + 1}/{args.repeat}: recording {len(STREAMS)} streams for {args.seconds:.0f} s in real time...",
                  file=sys.stderr)
            ours = run_ours(args.seconds, rt)
            raw = raw or make_raw_frames(tmp)
            print(f"round {k + 1}/{args.repeat}: ffmpeg (testsrc2), ffmpeg (our pictures), bare encoder...", file=sys.stderr)
            ff = run_ffmpeg(args.seconds, rt)
            ff_raw = run_ffmpeg(args.seconds, rt, raw)
            bare = run_bare(raw)
            rounds.append({"ours": ours, "ffmpeg_testsrc2": ff, "ffmpeg_our_frames": ff_raw, "bare_encoder": bare,
                           "ratios": {"ours/ffmpeg": ours["cpu_s_per_frame"] / ff["cpu_s_per_frame"],
                                      "ours/ffmpeg-raw": ours["cpu_s_per_frame"] / ff_raw["cpu_s_per_frame"],
                                      "ours/bare": ours["cpu_s_per_frame"] / bare["cpu_s_per_frame"]}})
    ours = _median_run([r["ours"] for r in rounds])
    print(table([[s["stream"], s["size"], s["fps"], s["target_fps"], s["dropped"]] for s in ours["streams"]],
                ["stream", "size", "fps", "target", "dropped"]))
    print(f"(the round with the median CPU per frame of {len(rounds)})")
    print()
    med = statistics.median
    print(f"CPU: {med(r['ours']['cpu_percent_of_2_cores'] for r in rounds)} % of {os.cpu_count()} cores (target <= 85)   "
          f"peak RSS: {med(r['ours']['peak_rss_mb'] for r in rounds)} MB   "
          f"drops: {med(sum(s['dropped'] for s in r['ours']['streams']) for r in rounds)} (target 0)   (medians)")
    print()
    rows = []
    for key, label in (("ours", "ours (whole recorder)"), ("ffmpeg_testsrc2", "ffmpeg testsrc2+drawtext"),
                       ("ffmpeg_our_frames", "ffmpeg our frames+drawtext"), ("bare_encoder", "bare PyAV x264")):
        per = [r[key]["cpu_s_per_frame"] * 1000 for r in rounds]
        rows.append([label, rounds[0][key]["frames"], f"{med(per):.2f}", " ".join(f"{x:.2f}" for x in per)])
    print(table(rows, ["what", "frames/round", "cpu_ms/frame (median)", "each round"]))
    print()
    ratios = {k: med(r["ratios"][k] for r in rounds) for k in rounds[0]["ratios"]}
    print(f"ours/ffmpeg {ratios['ours/ffmpeg']:.2f} (target <= 1.0)   ours/ffmpeg-raw {ratios['ours/ffmpeg-raw']:.2f}   "
          f"ours/bare {ratios['ours/bare']:.2f} (target <= 1.15)   (medians of the per-round ratios)")
    result = {"rounds": rounds, "median_ratios": {k: round(v, 3) for k, v in ratios.items()},
              "median_cpu_ms_per_frame": {row[0]: float(row[2]) for row in rows},
              "median_cpu_percent_of_machine": med(r["ours"]["cpu_percent_of_2_cores"] for r in rounds),
              "median_peak_rss_mb": med(r["ours"]["peak_rss_mb"] for r in rounds),
              "seconds": args.seconds, "x264": X264, "cpu_count": os.cpu_count(),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {RESULTS / 'throughput.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
