"""Throughput benchmark: a vehicle-sized load through examrec, against ffmpeg and the bare encoder.

Load: 4 x 1920x1080@25 + 1 x 1280x720@25 + audio from replay sources, in real time (default 60 s).
Each round measures
  - ours           the whole recorder (capture, overlay, convert, encode, mux, fsync, hashing),
                   paced in real time
  - ffmpeg paced   five `ffmpeg` processes, one per stream, started together, fed our own replay
                   pictures as rawvideo at real time (-re) with drawtext, libx264 (same preset,
                   crf, GOP, one thread) and fragmented MP4, for the same seconds: the same work
  - ffmpeg         the same five encoders running flat out on lavfi testsrc2 (the old yardstick)
  - ffmpeg-raw     flat out on our pictures
  - bare           PyAV's libx264 alone on pre-made frames of ours (the floor)
For ours and ffmpeg paced, the whole process tree is sampled every 0.5 s: CPU % of the machine,
CPU ms per frame, peak RSS and peak PSS (PSS summed over the tree at one instant), and drops.
Medians over --repeat rounds (default 3); the ratios ours / ffmpeg paced for CPU and PSS; all
of it, with the machine's CPU model and load average, goes to bench/results/throughput.json.
With --load lighter the same for 1 x 1920x1080@25 + 3 x 1280x720@25 + audio, a load this 2-core
machine carries (results: bench/results/throughput-lighter.json).
Usage: python bench/throughput.py [--seconds 60] [--repeat 3] [--load vehicle|lighter]
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

from proctree import TreeSampler, machine, process_table, save_results, tree_pids  # bench/ is the script's folder

from sessions.evidence.layout import EVENTS_NAME

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STREAMS = [("cam1", 1920, 1080, 25), ("cam2", 1920, 1080, 25), ("cam3", 1920, 1080, 25), ("cam4", 1920, 1080, 25),
           ("cam5", 1280, 720, 25)]
# What hw-profiles/vehicle.toml says a 2-core mini PC carries: a load that fits where the vehicle load does not.
LIGHTER = [("cam1", 1920, 1080, 25), ("cam2", 1280, 720, 25), ("cam3", 1280, 720, 25), ("cam4", 1280, 720, 25)]
LOADS = {"vehicle": STREAMS, "lighter": LIGHTER}
X264 = {"preset": "ultrafast", "crf": 23, "gop": 50}
AUDIO_FIXTURE = ROOT / "bench" / "fixtures" / "cabin.wav"
FRAGMENT_MS = 120  # the profile's default; ffmpeg paced writes fragments of the same length
SAMPLE_S = 0.5


def bench_profile(tmp: Path, streams: list[tuple[str, int, int, int]] = STREAMS) -> Path:
    """The load as a profile: the streams above, audio on the first, the x264 settings above."""
    lines = [f'name = "bench"\nkind = "replay"\nsegment_s = 300\nfragment_ms = {FRAGMENT_MS}\n',
             f'[encoder]\npreset = "{X264["preset"]}"\ncrf = {X264["crf"]}\ngop = {X264["gop"]}\n']
    for i, (name, w, h, fps) in enumerate(streams):
        audio = f'audio = "wav:{AUDIO_FIXTURE}"\n' if i == 0 else ""
        lines.append(f'[[streams]]\nname = "{name}"\nsource = "pattern:"\nwidth = {w}\nheight = {h}\nfps = {fps}\n{audio}')
    path = tmp / "bench.toml"
    path.write_text("\n".join(lines))
    return path


def record_command(profile: Path, seconds: float, out: Path) -> list[str]:
    return [sys.executable, "-m", "sessions.cli", "record", "--profile", str(profile), "--duration", str(seconds),
            "--out", str(out), "--json", "--force"]  # an overloaded machine fails the rate check: measure anyway


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _paced_figures(cpu: float, wall: float, frames: int, sampler: TreeSampler) -> dict:
    return {"cpu_s": round(cpu, 2), "frames": frames,
            "cpu_percent_of_machine": round(100 * cpu / (wall * os.cpu_count()), 1),
            "cpu_s_per_frame": cpu / frames if frames else float("inf"),
            "peak_rss_mb": round(sampler.peak_rss_kb / 1024, 1), "peak_pss_mb": round(sampler.peak_pss_kb / 1024, 1),
            "peak_processes": sampler.peak_processes, "samples": sampler.samples}


def run_ours(seconds: float, tmp: Path, streams: list[tuple[str, int, int, int]] = STREAMS, code: Path = ROOT) -> dict:
    """examrec (the one in ``code``) recording the load for ``seconds``; CPU counted from the
    session start to the end."""
    profile = bench_profile(tmp, streams)
    proc = subprocess.Popen(record_command(profile, seconds, tmp / "out"), cwd=code,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(lambda: [proc.pid], SAMPLE_S).start()
    at_start: list[float] = []  # CPU spent before recording began: imports, pre-exam checks
    stop = threading.Event()

    def watch_start() -> None:
        while not stop.is_set():
            if any('"type":"start"' in p.read_text() for p in (tmp / "out").glob(f"*/*/{EVENTS_NAME}")):
                table = process_table()
                at_start.append(sum(table[p][1] for p in tree_pids([proc.pid], table)))
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_start, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    stop.set()
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"recorder failed ({proc.returncode}): {err[-2000:]}")
    if not at_start:
        raise SystemExit("the recorder never logged its start")
    # Only what recording cost: the checks before it encode 2 s of every stream that no table counts.
    # From the tree's samples, not getrusage: the stream processes end into their forkserver's
    # figure, and the recorder never waits for the forkserver (so its children's rusage never
    # saw them). What the tree does after the last sample (< SAMPLE_S, closing) is left out.
    cpu = sampler.peak_cpu_s - at_start[0]
    manifest = json.loads(out)
    streams, frames_total = [], 0
    for s in manifest["streams"]:
        frames = sum(x["frames"] for x in s["segments"])
        dropped = sum(x["dropped"] for x in s["segments"])
        frames_total += frames
        streams.append({"stream": s["name"], "size": f'{s["width"]}x{s["height"]}', "fps": round(frames / seconds, 2),
                        "target_fps": s["fps"], "dropped": dropped})
    return {"seconds": seconds, **_paced_figures(cpu, seconds, frames_total, sampler),
            "dropped": sum(s["dropped"] for s in streams), "streams": streams}


def _ffmpeg_x264_args(out: Path, frag_us: int = 200000) -> list[str]:
    return ["-c:v", "libx264", "-preset", X264["preset"], "-crf", str(X264["crf"]), "-g", str(X264["gop"]),
            "-threads", "1", "-pix_fmt", "yuv420p", "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
            "-frag_duration", str(frag_us), "-flush_packets", "1", "-f", "mp4", str(out)]


DRAWTEXT = ("drawtext=text='%{localtime\\:%Y-%m-%d %H\\\\\\:%M\\\\\\:%S}  %{pts\\:hms}':"
            "x=10:y=10:fontsize=32:fontcolor=white:box=1:boxcolor=black")


def _raw_input(raw: Path, w: int, h: int, fps: int) -> list[str]:
    return ["-stream_loop", "-1", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", str(fps), "-i", str(raw)]


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
            src = _raw_input(raw_frames[(w, h)], w, h, fps)
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_threads", "1", *src, "-frames:v", str(n),
               "-vf", DRAWTEXT, *_ffmpeg_x264_args(tmp / f"ff-{name}.mp4")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"ffmpeg failed: {err[-1000:]}")
    cpu = cpu_children() - before
    return {"frames": frames_total, "cpu_s": round(cpu, 2), "cpu_s_per_frame": cpu / frames_total}


def read_progress(path: Path) -> dict[str, str]:
    """The last block of an ffmpeg ``-progress`` file (frame=, drop_frames=, dup_frames=, speed=...)."""
    last: dict[str, str] = {}
    block: dict[str, str] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        key, _, value = line.partition("=")
        block[key.strip()] = value.strip()
        if key == "progress":
            last, block = block, {}
    return last or block


def ffmpeg_paced_commands(seconds: float, out: Path, raw_frames: dict) -> list[list[str]]:
    """Five ffmpeg commands doing our work at real time: our pictures read at their frame rate
    (-re), drawtext, libx264 with one thread, the sound on the first, fragmented MP4 of the
    fragment length ours writes, a progress file each (<stream>.progress in ``out``)."""
    cmds = []
    for i, (name, w, h, fps) in enumerate(STREAMS):
        n = int(seconds * fps)
        audio_in = ["-re", "-stream_loop", "-1", "-i", str(AUDIO_FIXTURE)] if i == 0 else []
        audio_out = ["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-ac", "1", "-ar", "48000", "-t", str(seconds)] if i == 0 else []
        cmds.append(["ffmpeg", "-nostdin", "-v", "error", "-nostats", "-progress", str(out / f"{name}.progress"), "-y",
                     "-filter_threads", "1", "-re", *_raw_input(raw_frames[(w, h)], w, h, fps), *audio_in,
                     "-frames:v", str(n), *audio_out, "-vf", DRAWTEXT,
                     *_ffmpeg_x264_args(out / f"{name}.mp4", FRAGMENT_MS * 1000)])
    return cmds


def run_ffmpeg_paced(seconds: float, tmp: Path, raw_frames: dict) -> dict:
    """The five paced ffmpeg processes, started together and sampled like ours."""
    out = tmp / "ffmpeg-paced"
    out.mkdir()
    before = cpu_children()
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for cmd in ffmpeg_paced_commands(seconds, out, raw_frames)]
    sampler = TreeSampler(lambda: [p.pid for p in procs if p.poll() is None], SAMPLE_S).start()
    errors = [p.communicate()[1] for p in procs]
    wall = time.monotonic() - t0
    sampler.stop()
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise SystemExit(f"ffmpeg (paced) failed: {err[-1000:]}")
    cpu = cpu_children() - before
    streams, frames_total, lost = [], 0, 0
    for name, w, h, fps in STREAMS:
        prog = read_progress(out / f"{name}.progress")
        frames = int(prog.get("frame", 0))
        drop, dup = int(prog.get("drop_frames", 0)), int(prog.get("dup_frames", 0))
        frames_total += frames
        lost += drop + dup + max(0, int(seconds * fps) - frames)
        streams.append({"stream": name, "size": f"{w}x{h}", "frames": frames, "drop_frames": drop, "dup_frames": dup,
                        "speed": prog.get("speed", "")})
    # -re never drops: a machine that cannot keep up makes ffmpeg read late, so the run takes longer.
    # A machine that cannot keep up makes it take longer than ``seconds``: its share is of that time.
    return {"seconds": seconds, "wall_s": round(wall, 2), "late_s": round(wall - seconds, 2),
            **_paced_figures(cpu, max(wall, seconds), frames_total, sampler),
            "dropped": lost, "streams": streams}


def make_raw_frames(tmp: Path, count: int = 50) -> tuple[dict, float]:
    """Our replay pattern's pictures written once as rawvideo, for ffmpeg and the bare encoder;
    and what drawing one picture costs ours, in CPU seconds per frame of the load (ffmpeg reads
    them from a file instead)."""
    from capture.replay import PatternSource
    from core.clock import SessionClock
    clock = SessionClock.start_now()
    files, draw_s = {}, {}
    for w, h in {(w, h) for _, w, h, _ in STREAMS}:
        src = PatternSource("cam", w, h, 25, realtime=False)
        src.open()
        src.start(clock)
        path = tmp / f"pattern-{w}x{h}.bgr"
        spent = 0.0
        with open(path, "wb") as f:
            for _ in range(count):
                t0 = time.process_time()
                image = src.read().image
                spent += time.process_time() - t0
                f.write(image.tobytes())
        files[(w, h)] = path
        draw_s[(w, h)] = spent / count
    per_frame = sum(draw_s[(w, h)] for _, w, h, _ in STREAMS) / len(STREAMS)
    return files, per_frame


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


def run_round(k: int, seconds: float, tmp: Path, raw: dict) -> dict:
    """One round of every measurement. Ours and ffmpeg paced swap places every round, so neither
    always runs on the machine the other has just warmed up."""
    rt = tmp / f"round{k}"
    rt.mkdir()
    say = lambda what: print(f"round {k + 1}: {what}...", file=sys.stderr)
    paced: dict[str, dict] = {}
    for which in (("ours", "ffmpeg_paced") if k % 2 == 0 else ("ffmpeg_paced", "ours")):
        if which == "ours":
            say(f"examrec recording {len(STREAMS)} streams for {seconds:.0f} s in real time")
            paced["ours"] = run_ours(seconds, rt, STREAMS)
        else:
            say(f"{len(STREAMS)} ffmpeg processes on our pictures for {seconds:.0f} s in real time (-re)")
            paced["ffmpeg_paced"] = run_ffmpeg_paced(seconds, rt, raw)
    say("ffmpeg flat out (testsrc2, then our pictures), bare encoder")
    ours, ffp = paced["ours"], paced["ffmpeg_paced"]
    r = {"ours": ours, "ffmpeg_paced": ffp, "ffmpeg_testsrc2": run_ffmpeg(seconds, rt),
         "ffmpeg_our_frames": run_ffmpeg(seconds, rt, raw), "bare_encoder": run_bare(raw)}
    r["ratios"] = {"cpu ours/ffmpeg-paced": ours["cpu_s_per_frame"] / ffp["cpu_s_per_frame"],
                   "pss ours/ffmpeg-paced": ours["peak_pss_mb"] / ffp["peak_pss_mb"],
                   "rss ours/ffmpeg-paced": ours["peak_rss_mb"] / ffp["peak_rss_mb"],
                   "cpu ours/ffmpeg": ours["cpu_s_per_frame"] / r["ffmpeg_testsrc2"]["cpu_s_per_frame"],
                   "cpu ours/ffmpeg-raw": ours["cpu_s_per_frame"] / r["ffmpeg_our_frames"]["cpu_s_per_frame"],
                   "cpu ours/bare": ours["cpu_s_per_frame"] / r["bare_encoder"]["cpu_s_per_frame"]}
    return r


ROWS = (("ours", "ours, real time (whole recorder)"), ("ffmpeg_paced", "ffmpeg, real time (-re), our pictures"),
        ("ffmpeg_testsrc2", "ffmpeg flat out, testsrc2"), ("ffmpeg_our_frames", "ffmpeg flat out, our pictures"),
        ("bare_encoder", "bare PyAV x264, pre-made frames"))


def summarize(rounds: list[dict], pattern_s_per_frame: float) -> tuple[str, dict]:
    """The printed table and the medians written to the results file."""
    med = statistics.median
    rows, medians = [], {}
    for key, label in ROWS:
        per = [r[key]["cpu_s_per_frame"] * 1000 for r in rounds]
        m = {"cpu_ms_per_frame": round(med(per), 2), "each_round": [round(x, 2) for x in per]}
        if "peak_pss_mb" in rounds[0][key]:
            for f in ("cpu_percent_of_machine", "peak_rss_mb", "peak_pss_mb", "dropped"):
                m[f] = round(med(r[key][f] for r in rounds), 1)
        medians[key] = m
        show = lambda f: m[f] if f in m else "-"
        rows.append([label, rounds[0][key]["frames"], show("cpu_percent_of_machine"), f'{m["cpu_ms_per_frame"]:.2f}',
                     " ".join(f"{x:.2f}" for x in per), show("peak_rss_mb"), show("peak_pss_mb"), show("dropped")])
    ratios = {k: round(med(r["ratios"][k] for r in rounds), 3) for k in rounds[0]["ratios"]}
    ours_streams = " ".join(f'{s["stream"]} {s["fps"]}/{s["dropped"]}' for s in rounds[0]["ours"]["streams"])
    text = "\n".join([
        table(rows, ["what", "frames/round", "CPU % of machine", "cpu ms/frame", "each round", "peak RSS MB",
                     "peak PSS MB", "dropped"]),
        f"medians of {len(rounds)} round(s); ours per stream in round 1 (fps/dropped): {ours_streams}",
        "",
        f"CPU ours/ffmpeg-paced {ratios['cpu ours/ffmpeg-paced']:.2f} (target <= 1.05)   "
        f"PSS ours/ffmpeg-paced {ratios['pss ours/ffmpeg-paced']:.2f} (target <= 1.3)   "
        f"RSS {ratios['rss ours/ffmpeg-paced']:.2f}",
        f"ours/ffmpeg flat out: testsrc2 {ratios['cpu ours/ffmpeg']:.2f}, our pictures {ratios['cpu ours/ffmpeg-raw']:.2f}"
        f"   ours/bare {ratios['cpu ours/bare']:.2f}   (CPU per frame, medians of the per-round ratios)",
        f"ffmpeg paced took {statistics.median(r['ffmpeg_paced']['wall_s'] for r in rounds):.1f} s for "
        f"{rounds[0]['ffmpeg_paced']['seconds']:.0f} s of pictures (-re never drops: it falls behind instead)",
        f"of ours' {medians['ours']['cpu_ms_per_frame']:.2f} ms a frame, drawing the replay picture costs "
        f"{pattern_s_per_frame * 1000:.2f} ms (a camera's MJPEG decoding in the car; ffmpeg reads the pictures from a file)",
    ])
    return text, {"median": medians, "median_ratios": ratios,
                  "replay_picture_drawing_ms_per_frame": round(pattern_s_per_frame * 1000, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of every measurement; medians are reported")
    ap.add_argument("--load", choices=sorted(LOADS), default="vehicle",
                    help="the streams: the vehicle load (default; results in throughput.json) or the lighter "
                         "one that fits a 2-core machine (throughput-lighter.json)")
    args = ap.parse_args()
    global STREAMS
    STREAMS = LOADS[args.load]  # every function here reads the load from it
    RESULTS.mkdir(parents=True, exist_ok=True)
    before = machine()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        raw, pattern_s = make_raw_frames(tmp)
        rounds = [run_round(k, args.seconds, tmp, raw) for k in range(args.repeat)]
    after = machine()
    text, summary = summarize(rounds, pattern_s)
    print(text)
    name = "throughput.json" if args.load == "vehicle" else f"throughput-{args.load}.json"
    save_results(RESULTS / name, {**summary, "load": args.load, "seconds": args.seconds, "repeat": args.repeat,
                                  "x264": X264, "fragment_ms": FRAGMENT_MS,
                                  "streams": [f"{n} {w}x{h}@{fps}" for n, w, h, fps in STREAMS], "rounds": rounds},
                 before, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
