"""The benchmark's own instruments (bench/proctree.py, bench/throughput.py, bench/memory.py):
process-tree sampling of CPU, RSS and PSS, the mapping kinds of the memory breakdown, and the
paced ffmpeg commands run for real on our replay pictures."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # bench/ holds scripts, not a package

import memory  # noqa: E402
import proctree  # noqa: E402
import throughput  # noqa: E402
from media import ffprobe  # noqa: E402


def test_a_tree_sample_counts_the_cpu_of_a_process_that_ended_inside_it():
    """A child that used CPU and ended (reaped by its parent, in the tree) still counts: the
    recorder's stream processes end into their forkserver's figure before the bench's last look."""
    busy = f"{sys.executable} -c 'import time; t = time.process_time(); exec(\"while time.process_time() - t < 0.4: pass\")'"
    proc = subprocess.Popen(["sh", "-c", f"{busy}; sleep 3"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = proctree.tree_pids([proc.pid])
            if len(pids) == 2 and b"sleep" in Path(f"/proc/{pids[-1]}/cmdline").read_bytes():
                break  # the busy child has ended; sh sleeps
            time.sleep(0.05)
        assert proctree.sample_tree([proc.pid]).cpu_s >= 0.35
    finally:
        proc.kill()
        proc.wait()


def test_a_tree_sample_counts_grandchildren_and_pss_adds_up_below_rss():
    # sh starts a child that starts a grandchild: all three are in the tree, nothing else is.
    proc = subprocess.Popen(["sh", "-c", "sh -c 'sleep 5' & wait"])
    try:
        deadline = time.monotonic() + 5
        while len(proctree.tree_pids([proc.pid])) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        sample = proctree.sample_tree([proc.pid])
        assert len(sample.pids) == 3 and sample.pids[0] == proc.pid
        assert os.getpid() not in sample.pids
        # Three processes sharing sh's and libc's pages: PSS counts them once, RSS three times.
        assert 0 < sample.pss_kb < sample.rss_kb
        sampler = proctree.TreeSampler(lambda: [proc.pid], 0.05).start()
        time.sleep(0.3)
        sampler.stop()
        assert sampler.samples >= 2 and sampler.peak_processes == 3
        assert sampler.peak_pss_kb >= sample.pss_kb * 0.9 and sampler.peak_rss_kb > 0
    finally:
        proc.kill()
        proc.wait()
    assert proctree.tree_pids([proc.pid]) == []  # an ended process is no tree


def test_memory_breakdown_sorts_mappings_and_sums_to_the_process_pss():
    assert memory.kind_of("") == memory.ANON and memory.kind_of("[heap]") == memory.ANON
    assert memory.kind_of("/x/site-packages/av.libs/libx264-1a2b.so.164") == "libx264"
    assert memory.kind_of("/usr/lib/x86_64-linux-gnu/libavcodec.so.59.37.100") == "FFmpeg libs"
    assert memory.kind_of("/x/site-packages/cv2/cv2.abi3.so") == "OpenCV"
    assert memory.kind_of("/x/site-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so") == "numpy"
    assert memory.kind_of("/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so") == "Python"
    assert memory.kind_of("/usr/lib/x86_64-linux-gnu/libc.so.6") == memory.OTHER_LIBS
    assert memory.kind_of("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf") == memory.FILES
    assert memory.kind_of("/root/.cache/examrec/replay/pattern-v1-1920x1080.canvas.npy") == memory.PICTURES
    mine = memory.process_memory(os.getpid())
    total = sum(mine["pss_by_kind_mb"].values())
    assert mine["pss_mb"] > 0 and abs(total - mine["pss_mb"]) <= 0.05 * mine["pss_mb"] + 1
    assert mine["pss_by_kind_mb"]["numpy"] > 0  # this test process has numpy loaded (via media)
    assert mine["uss_mb"] <= mine["pss_mb"] <= mine["rss_mb"]


def test_paced_ffmpeg_runs_our_pictures_at_real_time_and_reports_its_frames(tmp_path):
    raw, draw_s = throughput.make_raw_frames(tmp_path, count=5)
    assert 0 < draw_s < 0.5 and all(p.stat().st_size == 5 * w * h * 3 for (w, h), p in raw.items())
    seconds = 0.4
    out = tmp_path / "paced"
    out.mkdir()
    cmds = throughput.ffmpeg_paced_commands(seconds, out, raw)
    assert len(cmds) == len(throughput.STREAMS)
    t0 = time.monotonic()
    # The first (with the sound) and the 720p one: every option the five use, run for real.
    for cmd in (cmds[0], cmds[-1]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
    assert time.monotonic() - t0 >= 2 * seconds  # -re: read at the frame rate, not flat out
    for name, w, h, fps in (throughput.STREAMS[0], throughput.STREAMS[-1]):
        progress = throughput.read_progress(out / f"{name}.progress")
        assert progress["progress"] == "end" and int(progress["frame"]) == int(seconds * fps)
        assert int(progress["drop_frames"]) == 0 and int(progress["dup_frames"]) == 0
        kinds = {s["codec_type"]: s for s in ffprobe(out / f"{name}.mp4")["streams"]}
        assert int(kinds["video"]["nb_read_frames"]) == int(seconds * fps)  # every frame decodes
        assert ("audio" in kinds) == (name == throughput.STREAMS[0][0])
        with av.open(str(out / f"{name}.mp4")) as c:
            v = c.streams.video[0]
            assert (v.codec_context.name, v.width, v.height) == ("h264", w, h)


def test_machine_names_the_cpu_and_the_load():
    m = proctree.machine()
    assert m["cores"] == os.cpu_count() and m["cpu_model"] and len(m["load_average"]) == 3


@pytest.mark.parametrize("text, expect", [
    ("frame=3\nprogress=continue\nframe=10\ndrop_frames=1\ndup_frames=2\nprogress=end\n",
     {"frame": "10", "drop_frames": "1", "dup_frames": "2", "progress": "end"}),
    ("frame=4\ndrop_frames=0\n", {"frame": "4", "drop_frames": "0"}),  # killed before its first block ended
])
def test_progress_reading_takes_the_last_block(tmp_path, text, expect):
    f = tmp_path / "x.progress"
    f.write_text(text)
    assert throughput.read_progress(f) == expect
