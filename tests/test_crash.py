"""Crash and power-loss safety, proven by killing real recorder processes and by rebuilding
sessions from the recorder's own write/fsync trace as a power cut would leave them.

`make test` runs a bounded version; `make soak` runs 200 kills and 500 cut points (or
$EXAMREC_SOAK_KILLS / $EXAMREC_SOAK_CUTS) and writes bench/results/crash.json with the loss per
stream at each frame rate and the random seeds it used. Every run prints its seeds; set
$EXAMREC_CRASH_SEED to replay the same choices (kill instants, targets, cut points, torn writes).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from crash_harness import (ROOT, STREAM_FPS, chromium_durations, crash_profile, ffprobe_duration, ffprobe_ok,
                           frame_times, gstreamer_duration, kept_until, mediainfo_duration, only_index_added,
                           read_trace, rebuild_after_cut, session_processes, start_recorder, wait_for_exit,
                           wait_started)
from core.clock import parse_iso
from sessions.evidence.repair import repair_session
from sessions.evidence.verify import verify_session

KILL_BOUND_S = 0.25
CUT_BOUND_S = 1.0
STREAMS = tuple(STREAM_FPS)
FINAL_TARGETS = ("controller", "all")


def _seed(default: int) -> int:
    """$EXAMREC_CRASH_SEED, else ``default``; printed, so any run can be replayed."""
    seed = int(os.environ.get("EXAMREC_CRASH_SEED", default))
    print(f"crash seed {seed} (replay with EXAMREC_CRASH_SEED={seed})")
    return seed


def _kill_run(tmp: Path, rng: random.Random, stream_kills: int, final: str) -> list[dict]:
    """One recording: ``stream_kills`` stream processes killed (the recorder restarts them), then
    a final kill of the controller or of every process at once (``final``). Returns one row per
    kill: whether its target was really gone, what was left running, the loss per stream."""
    out = tmp / f"run{rng.randrange(1 << 30)}"
    profile = crash_profile(tmp, segment_s=1)
    final_at = rng.uniform(1.0, 4.0) + stream_kills * 0.8
    proc = start_recorder(profile, out, duration=final_at + 30)
    session, pids = wait_started(out, proc)
    started = parse_iso(json.loads((session / "manifest.json").read_text())["started_at"]).timestamp()
    kills = []
    for i in range(stream_kills):
        at = (i + 1) * final_at / (stream_kills + 1)
        if rng.random() < 0.5:  # aim at a segment rotation (every whole second)
            at = round(at) + rng.uniform(-0.03, 0.03)
        stream = rng.choice(STREAMS)
        _sleep_until(started + at)
        pid = _live_pid(session, stream, pids)
        t = time.time()
        os.kill(pid, signal.SIGKILL)
        gone = not wait_for_exit([pid], timeout=5)
        kills.append({"target": f"stream:{stream}", "streams": [stream], "kill_pts": t - started, "target_gone": gone})
        time.sleep(0.3)
    _sleep_until(started + final_at)
    t = time.time()
    if final == "controller":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # The controller is gone at once; every process it started ends by itself (they watch it).
    left = wait_for_exit(sorted(set(_all_pids(session, pids)) | set(session_processes(proc.pid))), sid=proc.pid)
    proc.communicate(timeout=30)  # (the pipes close once the last of them is gone)
    kills.append({"target": final, "streams": list(STREAMS), "kill_pts": t - started,
                  "target_gone": proc.returncode == -signal.SIGKILL, "left_running": left})
    _wait_unlocked(session)
    report = repair_session(session)
    assert report.state == "interrupted", report
    checked = verify_session(session)   # killed: untouched up to its last signed checkpoint
    assert checked.untouched and checked.checkpoint is not None, [p for p in checked.problems if p.kind != "interrupted"]
    files = sorted(session.glob("*/*.mp4"))
    playable = sum(ffprobe_ok(f) for f in files)
    down = _restart_gaps(session)
    for k in kills:
        k["files"], k["playable"] = len(files), playable
        k["loss_s"] = {}
        for s in k["streams"]:
            gap = next((g for g in down.get(s, []) if g[0] <= k["kill_pts"] and (g[1] is None or k["kill_pts"] < g[1])), None)
            if gap is not None:
                continue  # killed again before it was back: it captured nothing this kill could lose
            resumed = max((g[1] for g in down.get(s, []) if g[1] is not None and g[1] <= k["kill_pts"]), default=0.0)
            end = kept_until(session, s, k["kill_pts"], STREAM_FPS[s])  # decodes every file: raises if one is broken
            # What was captured and not kept: since the last frame kept, or since the stream came
            # back from an earlier kill (the time in between is a gap the manifest records).
            k["loss_s"][s] = round(k["kill_pts"] - max(end or 0.0, resumed), 4)
    for s, gaps in down.items():
        restarts = [round(b - a, 3) for a, b in gaps if b is not None]
        if restarts:
            kills[0].setdefault("restart_s", {})[s] = restarts
    shutil.rmtree(out, ignore_errors=True)
    return kills


def _restart_gaps(session: Path) -> dict[str, list[tuple[float, float | None]]]:
    """Per stream, when its process died and when the restarted one was recording again
    (session timeline, from the event log)."""
    gaps: dict[str, list[tuple[float, float | None]]] = {}
    for line in (session / "events.jsonl").read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            break  # the torn last line of a killed recorder
        s = ev.get("stream")
        if ev.get("type") == "fault" and str(ev.get("device", "")).startswith("stream process"):
            gaps.setdefault(s, []).append((ev["pts_s"], None))
        elif ev.get("type") == "restarted" and gaps.get(s) and gaps[s][-1][1] is None:
            gaps[s][-1] = (gaps[s][-1][0], ev["pts_s"])
    return gaps


def _current_pid(session: Path, stream: str, pids: dict) -> int:
    """The live process of a stream (a restarted one reports its pid in a `recovered` event)."""
    pid = pids[stream]
    for line in (session / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("type") == "restarted" and ev.get("stream") == stream:
            pid = ev["pid"]
    return pid


def _live_pid(session: Path, stream: str, pids: dict, timeout: float = 10) -> int:
    """Wait until the stream has a live process (it may be restarting after an earlier kill)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _current_pid(session, stream, pids)
        if Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower():
            return pid
        time.sleep(0.02)
    raise AssertionError(f"stream {stream} has no live process")


def _all_pids(session: Path, pids: dict) -> list[int]:
    out = list(pids.values())
    for line in (session / "events.jsonl").read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            break  # the torn last line of a killed recorder
        if ev.get("type") == "restarted":
            out.append(ev["pid"])
    return out


def _wait_unlocked(session: Path, timeout: float = 20) -> None:
    """Stream processes whose controller died end by themselves; wait for the last one."""
    from sessions.evidence.lock import is_being_written
    deadline = time.monotonic() + timeout
    while is_being_written(session):
        assert time.monotonic() < deadline, f"{session}: a recorder process outlived its controller"
        time.sleep(0.05)


def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        time.sleep(delay)


def run_kills(tmp: Path, total: int, seed: int) -> list[dict]:
    """Recordings killed until ``total`` kills are done; the final kill alternates between the
    controller alone and every process, so both are always covered."""
    rng = random.Random(seed)
    rows: list[dict] = []
    run = 0
    while len(rows) < total:
        rows += _kill_run(tmp, rng, stream_kills=2, final=FINAL_TARGETS[run % len(FINAL_TARGETS)])
        run += 1
    for r in rows:
        r["seed"] = seed
        print(f"kill {r['target']:14} at {r['kill_pts']:6.2f} s: loss " + ", ".join(
            f"{s} {v:.3f}" for s, v in r["loss_s"].items()) + (f"; left running {r['left_running']}" if r.get("left_running") else ""))
    return rows


def traced_session(tmp: Path, seconds: float = 6.0) -> tuple[Path, Path, list]:
    """A clean recording with every write and fsync traced."""
    out, trace = tmp / "traced", tmp / "trace"
    proc = start_recorder(crash_profile(tmp, segment_s=2), out, duration=seconds, env={"EXAMREC_IO_TRACE": str(trace)})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out, trace, read_trace(trace)


CUT_RECORDING_S = 6.0


def run_cuts(tmp: Path, total: int, seed: int) -> list[dict]:
    from core.clock import SessionClock
    out, _, ops = traced_session(tmp, seconds=CUT_RECORDING_S)
    (session,) = [p.parent for p in out.glob("*/*/manifest.json")]
    clock = SessionClock.from_json(json.loads((session / "manifest.json").read_text())["clock"])
    rng = random.Random(seed)
    # Cut while the session records (not during the pre-exam checks' scratch recordings).
    media_ops = [o.t for o in ops if o.path.endswith(".mp4") and o.path.startswith(str(session))]
    first, last = min(media_ops), max(o.t for o in ops)
    # What each stream captured (the complete recording): a cut after the stop, while the files
    # are closed, loses nothing that was never captured.
    captured = {name: frame_times(session, name) for name in STREAMS}
    rows = []
    for i in range(total):
        cut = rng.randrange(first, last + 1)
        dst = tmp / f"cut{i}"
        rebuild_after_cut(ops, cut, out, dst, rng)
        sessions = [p for p in dst.glob("*/*") if p.is_dir()]
        cut_pts = clock.pts_s(cut)
        row = {"cut_pts": round(cut_pts, 4), "loss_s": {}, "files": 0, "playable": 0, "seed": seed, "changed": []}
        if not sessions or not (sessions[0] / "manifest.json").exists():
            row["note"] = "cut before the session was durable"
            rows.append(row)
            continue
        s = sessions[0]
        before = {p: p.read_bytes() for p in s.glob("*/*.mp4")}
        repair_session(s)
        checked = verify_session(s)    # cut: untouched up to its last signed checkpoint
        assert checked.untouched, (cut_pts, [p for p in checked.problems if p.kind != "interrupted"])
        entries = {seg["file"]: seg for st in json.loads((s / "manifest.json").read_text())["streams"]
                   for seg in st["segments"]}
        for p, old in before.items():  # never older data: repair only cuts, and closes with an index
            if p.exists():
                why = only_index_added(old, p.read_bytes(), entries.get(p.relative_to(s).as_posix(), {}).get("index"))
                if why:
                    row["changed"].append(f"{p.relative_to(s)}: {why}")
        files = sorted(s.glob("*/*.mp4"))
        row["files"] = len(files)
        row["playable"] = sum(ffprobe_ok(f) for f in files)  # every file, at every cut
        for name in STREAMS:
            end = kept_until(s, name, cut_pts, STREAM_FPS[name])
            before = [t for t in captured[name] if t < cut_pts]
            existed = min(cut_pts, before[-1] + 1 / STREAM_FPS[name]) if before else 0.0
            row["loss_s"][name] = round(max(0.0, existed - (end or 0.0)), 4)
        rows.append(row)
        print(f"cut at {cut_pts:6.2f} s: loss " + ", ".join(f"{n} {v:.3f}" for n, v in row["loss_s"].items()))
        shutil.rmtree(dst)
    return rows


def _check_kills(rows: list[dict]) -> None:
    for r in rows:
        assert r["target_gone"], ("the killed process was still running", r)
        assert not r.get("left_running"), ("processes outlived a killed recorder", r)
        assert r["playable"] == r["files"], r
        for stream, loss in r["loss_s"].items():
            assert loss <= KILL_BOUND_S, (r["target"], stream, STREAM_FPS[stream], loss, r)
    # A final kill measures every stream but those still restarting after an earlier kill.
    finals = [r for r in rows if not r["target"].startswith("stream:")]
    assert all(len(r["loss_s"]) >= len(STREAMS) - 2 for r in finals), finals


def _check_cuts(rows: list[dict]) -> None:
    for r in rows:
        assert not r["changed"], r
        assert r["playable"] == r["files"], r
        for stream, loss in r["loss_s"].items():
            assert loss <= CUT_BOUND_S, (stream, STREAM_FPS[stream], loss, r)


def test_kills_keep_all_but_the_last_quarter_second(tmp_path):
    rows = run_kills(tmp_path, total=6, seed=_seed(1))
    _check_kills(rows)
    assert {r["target"].split(":")[0] for r in rows} == {"stream", *FINAL_TARGETS}
    assert {s for r in rows for s in r["loss_s"]} == set(STREAMS), "a rate was never measured"


def test_power_cuts_keep_all_but_the_last_second(tmp_path):
    rows = run_cuts(tmp_path, total=12, seed=_seed(1))
    _check_cuts(rows)
    measured = [r for r in rows if "note" not in r]
    assert len(measured) >= len(rows) // 2, "most cuts fell before the session was durable"
    assert all(set(r["loss_s"]) == set(STREAMS) for r in measured), measured


def test_repair_is_idempotent_and_keeps_what_it_cuts(tmp_path):
    profile = crash_profile(tmp_path)
    out = tmp_path / "out"
    proc = start_recorder(profile, out, duration=30)
    session, pids = wait_started(out, proc)
    time.sleep(2.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    wait_for_exit(list(pids.values()))
    # Tear the cabin segment mid-fragment, as an unlucky cut would.
    seg = sorted((session / "cabin").glob("*.mp4"))[-1]
    data = seg.read_bytes()
    seg.write_bytes(data + b"\0\0\0\x40moof" + b"\x01" * 20)
    first = repair_session(session)
    assert first.repaired and any(t.file.endswith(seg.name) and t.trimmed_bytes > 0 for t in first.trims)
    # What was cut is kept aside: the torn tail (after whatever partial fragment the kill left),
    # and the header bytes that repair patched, each in its own file.
    saved = [(session / t.saved_as).read_bytes() for t in first.trims if t.file.endswith(seg.name)]
    assert any(b.endswith(b"\0\0\0\x40moof" + b"\x01" * 20) for b in saved), [b[:16] for b in saved]
    snapshot = {p: p.read_bytes() for p in session.rglob("*") if p.is_file()}
    second = repair_session(session)
    assert not second.repaired
    assert snapshot == {p: p.read_bytes() for p in session.rglob("*") if p.is_file()}
    info = subprocess.run([*_examrec(), "info", session, "--json"], capture_output=True, text=True, cwd=ROOT)
    assert json.loads(info.stdout)["repaired"]["last_pts_s"] > 1.5


def _examrec() -> list[str]:
    import sys
    return [sys.executable, "-m", "sessions.cli"]


def test_record_repairs_an_interrupted_session_in_its_output_folder(tmp_path):
    profile = crash_profile(tmp_path)
    out = tmp_path / "out"
    proc = start_recorder(profile, out, duration=30)
    session, pids = wait_started(out, proc)
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    wait_for_exit(list(pids.values()))
    again = start_recorder(profile, out, duration=1)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "repaired interrupted session" in err
    assert json.loads((session / "manifest.json").read_text())["state"] == "interrupted"


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0, f"mounting a tmpfs needs root (CI runs as root): {r.stderr}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_disk_full_stops_cleanly_and_keeps_everything_playable(tmp_path, small_disk):
    proc = start_recorder(crash_profile(tmp_path, segment_s=300), small_disk, duration=120)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err  # exitcodes.DISK_FULL
    assert "disk full" in err and str(small_disk) in err and "MB free" in err
    (session,) = [p.parent for p in small_disk.glob("*/*/manifest.json")]
    events = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    full = [e for e in events if e["type"] == "disk_full"]
    assert full and "free_bytes" in full[0] and str(small_disk) in full[0]["message"]
    assert events[-1]["type"] == "stop"
    files = sorted(session.glob("*/*.mp4"))
    assert files
    for f in files:
        assert ffprobe_ok(f), f
        assert kept_until(session, f.parent.name, 1e9, STREAM_FPS[f.parent.name]) is not None


def _fragment_delays(fps: float, seconds: float, tmp: Path) -> list[float]:
    """Feed a SegmentWriter frames at ``fps`` in real time, waking as the stream loop does
    (``wait_s``, then ``flush_if_due``), and return for each frame how long after its capture
    the fragment holding it was in the file."""
    import numpy as np
    from core.clock import NS_PER_S, SessionClock
    from core.profile import EncoderSpec
    from muxer.segment import SegmentSettings, SegmentWriter
    clock = SessionClock.start_now()
    written: list[tuple[int, int]] = []   # (monotonic ns, frames muxed before this fragment ended)
    captures: list[int] = []
    writer = None

    def on_fragment(rec) -> None:
        if rec.kind == "fragment":
            written.append((time.monotonic_ns(), writer.frames if writer else 0))

    settings = SegmentSettings(160, 120, fps, EncoderSpec(preset="ultrafast", crf=30), 25, fragment_ms=120)
    writer = SegmentWriter(tmp / f"{fps:g}.mp4", "x", settings, clock, on_fragment=on_fragment)
    assert writer.can_flush, "fragments cannot be ended on demand with this PyAV"
    image = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    for i in range(int(fps * seconds)):
        due = clock.start_ns + round(i * NS_PER_S / fps)
        while (now := time.monotonic_ns()) < due:
            writer.flush_if_due(now)
            time.sleep(writer.wait_s(min(0.05, (due - now) / NS_PER_S), now))
        captures.append(due)
        before = len(written)
        writer.write_video(image, due)
        # A fragment the muxer ended while taking this frame holds the frames before it only.
        if len(written) > before:
            written[-1] = (written[-1][0], writer.frames - 1)
    writer.close()
    delays = []
    for i, c in enumerate(captures[:-2]):  # the last frames are written by the close
        t = next((t for t, n in written if n > i), None)
        assert t is not None, f"frame {i} at {fps} fps never reached the file before the close"
        delays.append((t - c) / 1e9)
    return delays


def test_a_frame_reaches_the_file_within_the_kill_bound_at_every_rate(tmp_path):
    """The muxer alone (no recorder, little load): at every rate the profiles use, a captured
    frame is in a written fragment soon enough that a kill, which loses that wait plus the frame
    interval before it, stays within the bound. (With 120 ms fragments at every rate, 10 fps
    frames waited 0.3 s.)"""
    for fps in sorted(set(STREAM_FPS.values())):
        delays = _fragment_delays(fps, 2.0, tmp_path)
        print(f"{fps:g} fps: frame to file median {statistics.median(delays):.3f} s, max {max(delays):.3f} s")
        assert max(delays) + 1 / fps <= KILL_BOUND_S, (fps, sorted(delays)[-5:])
        assert max(delays) <= 0.2, (fps, sorted(delays)[-5:])
        assert statistics.median(delays) <= 0.13, (fps, statistics.median(delays))


def _fragments_end(path: Path, index_offset: int, tmp: Path) -> float:
    """Where the last sample of a repaired segment ends, read by PyAV from its fragments alone:
    the file up to its index, with the placeholder header put back as the kill left it."""
    import av
    from muxer.mp4_index import boxes, reopened
    data = path.read_bytes()[:index_offset]
    at = next(b.start for b in boxes(data) if b.type == b"mdat")
    bare = tmp / f"{path.parent.name}-fragments.mp4"
    bare.write_bytes(reopened(data, at))
    end = 0.0
    with av.open(str(bare)) as c:
        for pkt in c.demux():
            if pkt.pts is not None and pkt.size:
                end = max(end, float((pkt.pts + (pkt.duration or 0)) * pkt.time_base))
    return end


def _killed_and_repaired(tmp: Path, seconds: float) -> Path:
    """A one-segment recording of every stream, every process killed after ``seconds``, then repaired."""
    out = tmp / "out"
    proc = start_recorder(crash_profile(tmp, segment_s=300), out, duration=120)
    session, pids = wait_started(out, proc)
    time.sleep(seconds)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert not wait_for_exit(list(pids.values()))
    report = repair_session(session)
    assert report.state == "interrupted" and not [n for n in report.notes if "left fragmented" in n], report
    return session


def test_a_repaired_segment_shows_its_length_in_every_player_and_verifies(tmp_path):
    from muxer.repair import scan_segment
    from sessions.evidence.verify import CHANGED_BYTES, INTERRUPTED, verify_session
    session = _killed_and_repaired(tmp_path, 6.0)
    manifest = json.loads((session / "manifest.json").read_text())
    entries = {seg["file"]: seg for st in manifest["streams"] for seg in st["segments"]}
    files = sorted(session.glob("*/0001.mp4"))
    assert len(files) == len(STREAMS)
    chromium = chromium_durations(files)
    for path in files:
        e = entries[path.relative_to(session).as_posix()]
        assert e["index"]["offset"] + e["index"]["size"] == path.stat().st_size, e
        assert scan_segment(path).finalised, f"{path}: not a regular MP4 after repair"
        # Its true length: where its last sample ends on the session timeline, as FFmpeg reads the
        # fragments themselves (the file without its index).
        true_end = _fragments_end(path, e["index"]["offset"], tmp_path)
        assert true_end >= e["last_pts_s"], (true_end, e)
        said = {"ffprobe": ffprobe_duration(path), "mediainfo": mediainfo_duration(path),
                "gstreamer": gstreamer_duration(path), "chromium": chromium[path]}
        print(f"{path.parent.name}: true {true_end:.3f} s, players {said}")
        for player, d in said.items():
            assert d is not None and abs(d - true_end) <= 0.005, (path.parent.name, player, d, true_end)
    report = verify_session(session)
    by_file = {p.file: p for p in report.problems if p.file.endswith(".mp4")}
    assert all(p.kind == INTERRUPTED and "index repair appended" in p.detail for p in by_file.values()), by_file
    assert set(by_file) == set(entries), by_file

    # Someone edits an index (here: the length of the last sample) and signs the manifest again
    # with the device key: the signature and the whole-file hash agree, the fragments don't.
    from sessions.evidence.layout import chain_segments, write_manifest
    from sessions.evidence.signing import default_key_path, load_or_create_key, sign_manifest
    victim = files[0]
    data = bytearray(victim.read_bytes())
    stts = data.rindex(b"stts")
    count = int.from_bytes(data[stts + 8:stts + 12], "big")
    last_delta = stts + 12 + 8 * count - 4
    data[last_delta:last_delta + 4] = (int.from_bytes(data[last_delta:last_delta + 4], "big") + 9000).to_bytes(4, "big")
    victim.write_bytes(bytes(data))
    rel = victim.relative_to(session).as_posix()
    for st in manifest["streams"]:
        for seg in st["segments"]:
            if seg["file"] == rel:
                seg["sha256"], seg["size"] = hashlib.sha256(data).hexdigest(), len(data)
        chain_segments(st["segments"])
    manifest.pop("signature", None)
    write_manifest(session, sign_manifest(manifest, load_or_create_key(default_key_path())))
    tampered = [p for p in verify_session(session).problems if p.file == rel and p.kind == CHANGED_BYTES]
    assert tampered and "index" in tampered[0].detail, verify_session(session).problems


def test_the_repair_index_is_the_one_the_recorder_writes_on_close(tmp_path):
    """Closed segments, put back to how a kill would leave them: the index repair computes has
    the sample tables the muxer wrote on close (sizes, places, times, sync samples, roll group)."""
    from muxer.mp4_index import boxes, build_index, child, reopened
    out = tmp_path / "out"
    proc = start_recorder(crash_profile(tmp_path, segment_s=2), out, duration=3)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    files = sorted(out.glob("*/*/*/*.mp4"))
    assert len(files) == 2 * len(STREAMS), files

    def tables(buf: bytes, moov) -> dict:
        found = {}
        for i, trak in enumerate(b for b in boxes(buf, moov.body, moov.end) if b.type == b"trak"):
            stbl = child(buf, child(buf, child(buf, trak, b"mdia"), b"minf"), b"stbl")
            for b in boxes(buf, stbl.body, stbl.end):
                if b.type != b"stsd":  # (the muxer adds a bitrate box to it on close)
                    found[(i, b.type)] = buf[b.start:b.end]
        return found

    for path in files:
        closed = path.read_bytes()
        top = boxes(closed)
        assert [b.type for b in top] == [b"ftyp", b"free", b"mdat", b"moov"], (path, top)
        killed = reopened(closed[:top[3].start], top[2].start)
        plan = build_index(killed)
        assert plan.header_at == top[2].start and plan.header == closed[top[2].start:top[2].start + 8], path
        ours = killed[:plan.header_at] + plan.header + killed[plan.header_at + 8:] + plan.moov
        theirs, mine = tables(closed, top[3]), tables(ours, boxes(ours)[-1])
        assert theirs == mine, (path, sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k)))


def _summary(values: list[float]) -> dict | None:
    return {"median": statistics.median(values), "max": max(values), "count": len(values)} if values else None


def _per_stream(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for s in STREAMS:
        v = [r["loss_s"][s] for r in rows if s in r["loss_s"]]
        if v:
            out[s] = {"fps": STREAM_FPS[s], "median": statistics.median(v), "max": max(v), "count": len(v)}
    return out


@pytest.mark.soak
def test_soak_crash_figures(tmp_path):
    """`make soak`: 200 kills and 500 cut points; writes bench/results/crash.json."""
    kill_seed = _seed(int(time.time()))
    cut_seed = kill_seed + 1
    print(f"cut seed {cut_seed}")
    load_before = os.getloadavg()
    kills = run_kills(tmp_path, total=int(os.environ.get("EXAMREC_SOAK_KILLS", "200")), seed=kill_seed)
    cuts = run_cuts(tmp_path, total=int(os.environ.get("EXAMREC_SOAK_CUTS", "500")), seed=cut_seed)
    cut_losses = [v for r in cuts for v in r["loss_s"].values()]
    result = {
        # Replay this run's choices with EXAMREC_CRASH_SEED=<kills> (the cuts use <kills> + 1).
        "seeds": {"kills": kill_seed, "cuts": cut_seed},
        "kills": len(kills),
        "kill_targets": {t: sum(1 for r in kills if r["target"].startswith(t)) for t in ("stream", *FINAL_TARGETS)},
        "files_probed": sum(r["files"] for r in kills + cuts),
        "files_playable_percent": round(100 * sum(r["playable"] for r in kills + cuts)
                                        / max(1, sum(r["files"] for r in kills + cuts)), 2),
        "left_running_after_kills": sum(len(r.get("left_running", [])) for r in kills),
        "kill_loss_s": _per_stream(kills),
        "cut_points": len(cuts),
        "power_cut_loss_s": {"median": statistics.median(cut_losses), "max": max(cut_losses), **_per_stream(cuts)},
        "bounds_s": {"kill": KILL_BOUND_S, "power_cut": CUT_BOUND_S},
        # how long a killed stream process takes to record again (a gap in the manifest)
        "stream_restart_s": _summary([x for r in kills for v in r.get("restart_s", {}).values() for x in v]),
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()],
                         "cpus": os.cpu_count()},
    }
    out = ROOT / "bench" / "results" / "crash.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"{'stream':8} {'fps':>4} {'kill max':>9} {'cut max':>8}  (bounds {KILL_BOUND_S} s / {CUT_BOUND_S} s)")
    for s in STREAMS:
        k, c = result["kill_loss_s"].get(s, {}), result["power_cut_loss_s"].get(s, {})
        print(f"{s:8} {STREAM_FPS[s]:4g} {k.get('max', float('nan')):9.3f} {c.get('max', float('nan')):8.3f}")
    _check_kills(kills)
    _check_cuts(cuts)
