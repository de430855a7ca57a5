"""Crash and power-loss safety, proven by killing real recorder processes and by rebuilding
sessions from the recorder's own write/fsync trace as a power cut would leave them.

`make test` runs a bounded version; `make soak` runs 200 kills and 500 cut points and writes
bench/results/crash.json.
"""
from __future__ import annotations

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

from crash_harness import (ROOT, crash_profile, ffprobe_ok, kept_until, read_trace, rebuild_after_cut,
                           start_recorder, wait_for_exit, wait_started)
from core.clock import parse_iso
from sessions.evidence.repair import repair_session
from sessions.evidence.verify import verify_session

KILL_BOUND_S = 0.25
CUT_BOUND_S = 1.0
FPS = 25.0
STREAMS = ("cabin", "road", "pedal")


def _kill_run(tmp: Path, rng: random.Random, stream_kills: int) -> list[dict]:
    """One recording: ``stream_kills`` stream processes killed (the recorder restarts them), then
    a final kill of the controller or of every process at once. Returns one row per kill."""
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
        kills.append({"target": f"stream:{stream}", "streams": [stream], "kill_pts": t - started})
        time.sleep(0.3)
    _sleep_until(started + final_at)
    target = rng.choice(["controller", "all"])
    t = time.time()
    if target == "controller":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    kills.append({"target": target, "streams": list(STREAMS), "kill_pts": t - started})
    wait_for_exit(_all_pids(session, pids))
    _wait_unlocked(session)
    report = repair_session(session)
    assert report.state == "interrupted"
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
            end = kept_until(session, s, k["kill_pts"], FPS)  # decodes every file: raises if one is broken
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
        ev = json.loads(line)
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
    rng = random.Random(seed)
    rows: list[dict] = []
    while len(rows) < total:
        rows += _kill_run(tmp, rng, stream_kills=2)
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
    rows = []
    for i in range(total):
        cut = rng.randrange(first, last + 1)
        dst = tmp / f"cut{i}"
        rebuild_after_cut(ops, cut, out, dst, rng)
        sessions = [p for p in dst.glob("*/*") if p.is_dir()]
        cut_pts = clock.pts_s(cut)
        row = {"cut_pts": round(cut_pts, 4), "loss_s": {}, "files": 0, "playable": 0}
        if not sessions or not (sessions[0] / "manifest.json").exists():
            row["note"] = "cut before the session was durable"
            rows.append(row)
            continue
        s = sessions[0]
        before = {p: p.read_bytes() for p in s.glob("*/*.mp4")}
        repair_session(s)
        checked = verify_session(s)    # cut: untouched up to its last signed checkpoint
        assert checked.untouched, (cut_pts, [p for p in checked.problems if p.kind != "interrupted"])
        for p, old in before.items():  # never older data: repair only cuts, never rewrites
            if p.exists():
                new = p.read_bytes()
                assert old[:len(new)] == new or _only_header_restored(old, new), p
        files = sorted(s.glob("*/*.mp4"))
        row["files"] = len(files)
        row["playable"] = sum(ffprobe_ok(f) for f in files) if i % 5 == 0 else len(files)
        for name in ("cabin", "road", "pedal"):
            end = kept_until(s, name, cut_pts, FPS)
            # Nothing is captured after the stop: a cut while the session is being finished loses
            # only what was recorded before the stop and not kept.
            row["loss_s"][name] = round(max(0.0, min(cut_pts, CUT_RECORDING_S) - (end or 0.0)), 4)
        rows.append(row)
        shutil.rmtree(dst)
    return rows


def _only_header_restored(old: bytes, new: bytes) -> bool:
    """Repair put back the 8-byte header that an interrupted close had rewritten, nothing else."""
    return old[:36] == new[:36] and old[44:len(new)] == new[44:] and new[40:44] == b"free"


def _check_kills(rows: list[dict]) -> None:
    for r in rows:
        assert r["playable"] == r["files"], r
        for stream, loss in r["loss_s"].items():
            assert loss <= KILL_BOUND_S, (r["target"], stream, loss, r)


def _check_cuts(rows: list[dict]) -> None:
    for r in rows:
        assert r["playable"] == r["files"], r
        for stream, loss in r["loss_s"].items():
            assert loss <= CUT_BOUND_S, (stream, loss, r)


def test_kills_keep_all_but_the_last_quarter_second(tmp_path):
    rows = run_kills(tmp_path, total=21, seed=int(os.environ.get("EXAMREC_CRASH_SEED", "1")))
    _check_kills(rows)
    assert {r["target"].split(":")[0] for r in rows} >= {"stream"}


def test_power_cuts_keep_all_but_the_last_second(tmp_path):
    rows = run_cuts(tmp_path, total=50, seed=int(os.environ.get("EXAMREC_CRASH_SEED", "1")))
    _check_cuts(rows)
    assert all(r["loss_s"] for r in rows), [r for r in rows if not r["loss_s"]]


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
        assert kept_until(session, f.parent.name, 1e9, FPS) is not None


def _summary(values: list[float]) -> dict | None:
    return {"median": statistics.median(values), "max": max(values), "count": len(values)} if values else None


@pytest.mark.soak
def test_soak_crash_figures(tmp_path):
    """`make soak`: 200 kills and 500 cut points; writes bench/results/crash.json."""
    kills = run_kills(tmp_path, total=200, seed=int(time.time()))
    cuts = run_cuts(tmp_path, total=500, seed=int(time.time()))
    kill_losses = {s: [r["loss_s"][s] for r in kills if s in r["loss_s"]] for s in STREAMS}
    cut_losses = [v for r in cuts for v in r["loss_s"].values()]
    result = {
        "kills": len(kills),
        "kill_targets": {t: sum(1 for r in kills if r["target"].startswith(t)) for t in ("stream", "controller", "all")},
        "files_playable_percent": round(100 * sum(r["playable"] for r in kills + cuts) / max(1, sum(r["files"] for r in kills + cuts)), 2),
        "kill_loss_s": {s: {"median": statistics.median(v), "max": max(v)} for s, v in kill_losses.items() if v},
        "cut_points": len(cuts),
        "power_cut_loss_s": {"median": statistics.median(cut_losses), "max": max(cut_losses)},
        "bounds_s": {"kill": KILL_BOUND_S, "power_cut": CUT_BOUND_S},
        # how long a killed stream process takes to record again (a gap in the manifest)
        "stream_restart_s": _summary([x for r in kills for v in r.get("restart_s", {}).values() for x in v]),
    }
    out = ROOT / "bench" / "results" / "crash.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    _check_kills(kills)
    _check_cuts(cuts)
