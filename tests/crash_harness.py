"""Crash and power-cut harness: kill recorder processes at chosen moments, and rebuild sessions as
they would be after a power cut from the recorder's own trace of writes and fsyncs.

Loss is measured, not guessed: the kill/cut instant on the session timeline (from the manifest's
clock) minus the end of the last frame kept, per stream.
"""
from __future__ import annotations

import json
import os
import random
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


def wait_for_exit(pids: list[int], timeout: float = 20, sid: int | None = None) -> list[int]:
    """Wait for the processes to end; return those still alive at the deadline (killed then, so
    a failing run leaves nothing behind). With ``sid``, a pid counts only while it is still in
    that session (the recorder's), so a pid the kernel reused for something else is not blamed."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _alive(p) and (sid is None or _sid(p) == sid)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for p in alive:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def session_processes(sid: int) -> list[int]:
    """Every live process in session ``sid``: the recorder runs in its own session
    (start_new_session), so these are all it started, however they were started."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def _state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        return "gone zombie"
    return ""


def frame_times(session: Path, stream: str) -> list[float]:
    """PTS of every frame of ``stream`` in the session, sorted (PyAV, decoding)."""
    import av
    times = []
    for path in sorted((session / stream).glob("*.mp4")):
        with av.open(str(path)) as c:
            times += [float(f.pts * f.time_base) for f in c.decode(video=0)]
    return sorted(times)


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
    """ffprobe reads every frame of the file's first stream without a word on stderr."""
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames",
                        "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    counts = [int(x) for x in r.stdout.split() if x.strip().isdigit()]
    return r.returncode == 0 and not r.stderr.strip() and bool(counts) and counts[0] > 0


def only_index_added(old: bytes, new: bytes, index: dict | None) -> str | None:
    """What repair may do to a segment: keep a prefix of it, and (when it records an ``index``)
    append that index and turn the 8-byte placeholder header into the mdat header reaching it.
    None when that is all that changed, else what else did."""
    kept = index["offset"] if index else len(new)
    if kept > len(old):
        return f"repair kept {kept} bytes of a {len(old)}-byte file"
    diff = [i for i in range(kept) if old[i] != new[i]] if old[:kept] != new[:kept] else []
    if diff:
        from muxer.mp4_index import boxes
        at = next((b.start for b in boxes(new, 0, kept) if b.type == b"mdat" and b.header == 8), None)
        if index is None or at is None or diff[0] < at or diff[-1] >= at + 8 \
                or old[at + 4:at + 8] not in (b"free", b"mdat", bytes(4)):  # zeros: the close's rewrite torn by the cut
            return f"bytes {diff[0]}-{diff[-1]} changed, not just the placeholder header"
    if index is not None and len(new) != kept + index["size"]:
        return f"{len(new) - kept} bytes follow the fragments, the index is {index['size']}"
    return None


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


# --- what players say a file lasts -------------------------------------------------------------

def ffprobe_duration(path: Path) -> float | None:
    r = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                       capture_output=True, text=True)
    try:
        return float(r.stdout.strip())
    except ValueError:
        return None


def mediainfo_duration(path: Path) -> float | None:
    r = subprocess.run(["mediainfo", "--Inform=General;%Duration%", str(path)], capture_output=True, text=True)
    try:
        return float(r.stdout.strip()) / 1000
    except ValueError:
        return None


def gstreamer_duration(path: Path) -> float | None:
    """GStreamer's qtdemux, through gst-discoverer-1.0 ("Duration: 0:00:07.020000000")."""
    r = subprocess.run(["gst-discoverer-1.0", str(path)], capture_output=True, text=True, timeout=60)
    for line in r.stdout.splitlines():
        if line.strip().startswith("Duration:"):
            h, m, s = line.split(":", 1)[1].strip().split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
    return None


def chromium_durations(paths: list[Path]) -> dict[Path, float | None]:
    """What a <video> element in Debian's headless chromium says each file lasts."""
    import shutil as _shutil
    import tempfile
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = Path(tempfile.mkdtemp(prefix="examrec-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
                "--allow-file-access-from-files"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(60)
    out: dict[Path, float | None] = {}
    try:
        for path in paths:
            page = path.with_suffix(".html")
            page.write_text(f'<!doctype html><video preload="metadata" src="{path.name}"></video>')
            driver.get(page.as_uri())
            out[path] = driver.execute_async_script("""
                const done = arguments[arguments.length - 1], v = document.querySelector('video');
                const report = () => done(isFinite(v.duration) ? v.duration : null);
                if (v.readyState >= 1) report();
                else { v.addEventListener('loadedmetadata', report); v.addEventListener('error', () => done(null)); }
            """)
            page.unlink()
    finally:
        driver.quit()
        _shutil.rmtree(profile, ignore_errors=True)
    return out
