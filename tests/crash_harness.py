"""Crash and power-cut harness: kill recorder processes at chosen moments, and rebuild sessions as
they would be after a power cut from the recorder's own trace of writes and fsyncs.

Loss is measured, not guessed: the kill/cut instant on the session timeline (from the manifest's
clock) minus the end of the last frame kept, per stream.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTOR = 512


# The rates the profiles use (hw-profiles/*.toml): every one is killed and cut, and its loss
# measured against the same bounds.
STREAM_FPS = {"cabin": 25.0, "road": 30.0, "pedal": 25.0, "room": 15.0, "screen": 10.0}


def crash_profile(tmp: Path, segment_s: int = 2) -> Path:
    """Light streams at every rate the profiles use (one with audio), short segments so kills
    land on rotations too. The control socket sits in ``tmp``: crash runs of several checkouts
    on one machine must not find each other's recorder."""
    streams = "".join(f'''
[[streams]]
name = "{name}"
source = "{'clip:' + str(ROOT / 'bench/fixtures/pedal-cam.mp4') if name == 'pedal' else 'pattern:'}"
width = 320
height = 240
fps = {fps:g}
{('audio = "wav:' + str(ROOT / 'bench/fixtures/cabin.wav') + '"') if name == 'cabin' else ''}
''' for name, fps in STREAM_FPS.items())
    text = f'''
name = "crash"
kind = "replay"
segment_s = {segment_s}
fragment_ms = 120
fsync_interval_ms = 500
control_socket = "{tmp / 'crash.sock'}"
[checks]
sample_s = 1.0
[encoder]
preset = "ultrafast"
crf = 28
gop = 25
{streams}'''
    path = tmp / "crash.toml"
    path.write_text(text)
    return path


def start_recorder(profile: Path, out: Path, duration: float, env: dict | None = None) -> subprocess.Popen:
    # --force: these tests are about crashes; a check failing on a loaded machine must not stop them.
    return subprocess.Popen([sys.executable, "-m", "sessions.cli", "record", "--profile", str(profile),
                             "--duration", str(duration), "--out", str(out), "--force"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


def wait_started(out: Path, proc: subprocess.Popen, timeout: float = 60) -> tuple[Path, dict]:
    """The session folder and the pids from its start event, once recording has begun."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev_path in out.glob("*/*/events.jsonl"):
            for line in ev_path.read_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    break  # a line being written
                if ev.get("type") == "start" and "pids" in ev:  # (not an older session in the folder)
                    return ev_path.parent, ev["pids"]
        if proc.poll() is not None:
            raise AssertionError(f"recorder ended early: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    raise AssertionError("recorder did not start in time")


def session_clock(session: Path):
    from core.clock import SessionClock
    m = json.loads((session / "manifest.json").read_text())
    return SessionClock.from_json(m["clock"])


def wait_for_exit(pids: list[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() and "zombie" not in _state(p) for p in pids):
            return
        time.sleep(0.05)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        return "gone zombie"
    return ""


def kept_until(session: Path, stream: str, before_pts: float, fps: float) -> float | None:
    """End (last PTS + one frame) of the frames of ``stream`` kept before ``before_pts``, decoding
    every segment file (PyAV); raises if a file does not decode cleanly."""
    import av
    last = None
    for path in sorted((session / stream).glob("*.mp4")):
        with av.open(str(path)) as c:
            for f in c.decode(video=0):  # a repaired file decodes without error to its end
                t = float(f.pts * f.time_base)
                if t < before_pts:
                    last = t if last is None else max(last, t)
    return None if last is None else last + 1 / fps


def ffprobe_ok(path: Path) -> bool:
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames",
                        "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    counts = [int(x) for x in r.stdout.split() if x.strip().isdigit()]
    return r.returncode == 0 and not r.stderr.strip() and bool(counts) and counts[0] > 0


# --- power-cut emulation -------------------------------------------------------------------

@dataclass
class Op:
    t: int
    op: str
    path: str
    data: bytes = b""
    fields: dict = field(default_factory=dict)


def read_trace(trace_dir: Path) -> list[Op]:
    """Every process's operations, merged in time order."""
    ops: list[Op] = []
    for tf in Path(trace_dir).glob("*.trace"):
        raw = tf.read_bytes()
        pos = 0
        while pos < len(raw):
            nl = raw.index(b"\n", pos)
            head = json.loads(raw[pos:nl])
            n = head.pop("len")
            data = raw[nl + 1:nl + 1 + n]
            pos = nl + 1 + n
            ops.append(Op(head.pop("t"), head.pop("op"), head.pop("path"), data, head))
    ops.sort(key=lambda o: o.t)
    return ops


@dataclass
class _FileState:
    durable: bytearray = field(default_factory=bytearray)
    cache: bytearray = field(default_factory=bytearray)
    pending: list = field(default_factory=list)  # writes since the last fsync: (off, data) or ("trunc", n)


def _apply(buf: bytearray, off: int, data: bytes) -> None:
    if len(buf) < off:
        buf.extend(b"\0" * (off - len(buf)))
    buf[off:off + len(data)] = data


def rebuild_after_cut(ops: list[Op], cut_t: int, src_root: Path, dst_root: Path, rng: random.Random) -> dict:
    """Write into ``dst_root`` the files under ``src_root`` as a power cut at ``cut_t`` would
    leave them: fsynced bytes kept; each later write dropped, kept, or torn (the sectors up to a
    random sector boundary kept, the rest zeros or missing); names and renames not yet made
    durable by a folder fsync may or may not exist."""
    files: dict[str, _FileState] = {}
    names: dict[str, str] = {}  # visible path -> inode key
    durable_names: dict[str, str] = {}
    pending_renames: list[tuple[str, str, str]] = []
    counter = 0
    src_root = str(src_root)
    stats = {"torn": 0, "dropped": 0, "kept": 0}
    for op in ops:
        if op.t >= cut_t:
            break
        if not op.path.startswith(src_root):
            continue
        if op.op == "open":
            if op.path not in names:
                counter += 1
                names[op.path] = f"inode{counter}"
                files[names[op.path]] = _FileState()
            st = files[names[op.path]]
            if op.fields.get("trunc"):
                st.cache = bytearray()
                st.pending.append(("trunc", 0))
        elif op.op == "write":
            st = files[names[op.path]]
            _apply(st.cache, op.fields["off"], op.data)
            st.pending.append((op.fields["off"], op.data))
        elif op.op == "truncate":
            st = files[names[op.path]]
            del st.cache[op.fields["size"]:]
            st.pending.append(("trunc", op.fields["size"]))
        elif op.op == "fsync":
            st = files[names[op.path]]
            st.durable = bytearray(st.cache)
            st.pending.clear()
        elif op.op == "rename":
            key = names.pop(op.path)
            names[op.fields["dst"]] = key
            pending_renames.append((op.path, op.fields["dst"], key))
        elif op.op == "fsync_dir":
            for path, key in list(names.items()):
                if os.path.dirname(path) == op.path:
                    durable_names[path] = key
            for src, dst, key in list(pending_renames):
                if os.path.dirname(dst) == op.path:
                    durable_names[dst] = key
                    durable_names.pop(src, None)
                    pending_renames.remove((src, dst, key))
    # Names created since the last folder fsync may or may not exist; pending renames may or may not apply.
    visible = dict(durable_names)
    for path, key in names.items():
        if path not in visible and rng.random() < 0.5:
            visible[path] = key
    for src, dst, key in pending_renames:
        if rng.random() < 0.5:
            visible[dst] = key
            visible.pop(src, None)
    for path, key in visible.items():
        st = files[key]
        content = bytearray(st.durable)
        for item in st.pending:
            if item[0] == "trunc":
                if rng.random() < 0.5:
                    del content[item[1]:]
                continue
            off, data = item
            choice = rng.random()
            if choice < 0.33:
                stats["dropped"] += 1
                continue
            if choice < 0.66:
                stats["kept"] += 1
                _apply(content, off, data)
            else:
                # Torn at a sector boundary: disks write 512-byte sectors whole or not at all.
                stats["torn"] += 1
                cuts = [b - off for b in range((off // SECTOR + 1) * SECTOR, off + len(data), SECTOR)]
                keep = rng.choice([0, *cuts]) if cuts else 0
                torn = data[:keep] + (b"\0" * (len(data) - keep) if rng.random() < 0.5 else b"")
                _apply(content, off, torn)
        rel = os.path.relpath(path, src_root)
        out = Path(dst_root) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(bytes(content))
    return stats
