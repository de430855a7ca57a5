"""One stream's process: capture -> overlay -> encode -> fragmented MP4 segments.

Each camera runs in its own process so the streams use both cores and a hung driver stalls
nothing else. Inside, a capture thread feeds a small bounded queue; when encoding falls behind,
frames are dropped at the source and counted, never blocking capture or growing memory.
The process talks to the session controller through two queues: commands in, messages out.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capture.base import AudioSource, SourceError, VideoSource
from muxer.fragment_file import FragmentRecord, fsync_dir
from muxer.overlay import Overlay, OverlayState
from muxer.segment import AudioTimeline, SegmentResult, SegmentSettings, SegmentWriter
from core import durable
from sessions.evidence.chain import ChainedLog
from core.clock import NS_PER_S, SessionClock
from core.profile import Profile, StreamSpec

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 0.5  # also the controller's sign of life for its watchdog
REOPEN_BACKOFF_S = (0.5, 1, 2, 4, 5)


@dataclass
class StreamJob:
    """Everything a stream process needs (picklable: it crosses the process boundary)."""

    spec: StreamSpec
    profile: Profile
    session_dir: str
    realtime: bool = True
    stall_s: float = 1.5  # no frame for this long while the source says nothing: a fault
    first_segment: int = 0  # segments already written by an earlier process of this stream


@dataclass
class Counters:
    captured: int = 0
    dropped: int = 0       # frames the encoder could not take in time (dropped at the source)
    source_skipped: int = 0
    encoded: int = 0
    bytes: int = 0
    last_pts_s: float | None = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class StreamProcess:
    """The body of one stream process (constructed in the child)."""

    def __init__(self, job: StreamJob, out_conn, cmd_q):
        self.job = job
        self.spec = job.spec
        self.out_conn = out_conn
        self._send_lock = threading.Lock()
        self.cmd_q = cmd_q
        self.session_dir = Path(job.session_dir)
        self.stream_dir = self.session_dir / self.spec.name
        self.frames: queue.Queue = queue.Queue(maxsize=self.spec.queue_frames)
        self.audio_blocks: queue.Queue = queue.Queue(maxsize=2000)
        self.counters = Counters()
        self.clock: SessionClock | None = None
        self.stop_ns: int | None = None
        self.stopping = threading.Event()
        self.state = OverlayState()
        self.writer: SegmentWriter | None = None
        self.segment_no = job.first_segment
        self.segment_end_pts_s = 0.0
        self.stage = 1
        self.paused = False
        self.fault_open = False
        self.audio_fault_open = False
        self.last_frame_mono = time.monotonic()
        self.fraglog: ChainedLog | None = None
        self.last_fragment_end = 0
        self.hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.video: VideoSource | None = None
        self.audio: AudioSource | None = None
        self.audio_timeline: AudioTimeline | None = None
        self.overlay: Overlay | None = None
        self.photo_requests: list[dict] = []
        self.pedal_intervals: dict[str, list] | None = None
        self.pending_banner_until_ns = 0
        self.exit_reason = "stop"

    # messages ---------------------------------------------------------------------------
    def send(self, kind: str, **payload: Any) -> None:
        with self._send_lock:  # capture, hashing and main threads all report
            try:
                self.out_conn.send((kind, self.spec.name, payload))
            except (BrokenPipeError, OSError):
                pass  # the controller is gone; the parent-death check ends this process

    def event(self, type_: str, capture_ns: int | None = None, **fields: Any) -> None:
        self.send("event", type=type_, capture_ns=capture_ns or time.monotonic_ns(), fields={"stream": self.spec.name, **fields})

    # set-up ----------------------------------------------------------------------------
    def open_sources(self) -> tuple[bool, str]:
        from capture.factory import audio_source, video_source
        self.video = video_source(self.spec, self.job.profile, realtime=self.job.realtime)
        if self.spec.audio:
            self.audio = audio_source(self.spec, self.job.profile, realtime=self.job.realtime)
        problems = []
        try:
            self.video.open()
        except SourceError as exc:
            problems.append(str(exc))
            self.fault_open = True
        if self.audio is not None:
            try:
                self.audio.open()
            except SourceError as exc:
                problems.append(str(exc))
                self.audio_fault_open = True
        return (not problems, "; ".join(problems))

    # threads ---------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        src = self.video
        assert src is not None and self.clock is not None
        backoff = 0
        while not self.stopping.is_set():
            if self.fault_open:
                time.sleep(REOPEN_BACKOFF_S[min(backoff, len(REOPEN_BACKOFF_S) - 1)])
                backoff += 1
                try:
                    src.open()
                    src.start(self.clock)
                except SourceError as exc:
                    log.debug("%s: reopen failed: %s", self.spec.name, exc)
                    continue
                self.fault_open = False
                backoff = 0
                self.event("recovered", device=f"camera {self.spec.name}", what="video")
                continue
            try:
                frame = src.read()
            except SourceError as exc:
                self.fault_open = True
                self.event("fault", device=f"camera {self.spec.name}", what="video", message=str(exc))
                src.close()
                continue
            if frame.capture_ns < self.clock.start_ns:
                continue  # a live device delivers before the session starts: not part of it
            self.counters.captured += 1
            if self.job.realtime:
                try:
                    self.frames.put_nowait(frame)
                except queue.Full:
                    self.counters.dropped += 1
            else:
                while not self.stopping.is_set():
                    try:
                        self.frames.put(frame, timeout=0.2)
                        break
                    except queue.Full:
                        continue
            if self.stop_ns is not None and frame.capture_ns >= self.stop_ns:
                break

    def _audio_loop(self) -> None:
        src = self.audio
        assert src is not None and self.clock is not None
        backoff = 0
        while not self.stopping.is_set():
            if self.audio_fault_open:
                time.sleep(REOPEN_BACKOFF_S[min(backoff, len(REOPEN_BACKOFF_S) - 1)])
                backoff += 1
                try:
                    src.open()
                    src.start(self.clock)
                except SourceError:
                    continue
                self.audio_fault_open = False
                backoff = 0
                self.event("recovered", device=f"audio of {self.spec.name}", what="audio")
                continue
            try:
                block = src.read()
            except SourceError as exc:
                self.audio_fault_open = True
                self.event("fault", device=f"audio of {self.spec.name}", what="audio", message=str(exc))
                src.close()
                continue
            try:
                self.audio_blocks.put(block, timeout=1)
            except queue.Full:
                log.warning("%s: audio queue full, block dropped", self.spec.name)
            if self.stop_ns is not None and block.capture_ns >= self.stop_ns:
                break

    # segments --------------------------------------------------------------------------
    def _on_fragment(self, rec: FragmentRecord) -> None:
        self.last_fragment_end = rec.end
        entry = {"file": self.writer_rel, "kind": rec.kind, "index": rec.index, "offset": rec.offset,
                 "end": rec.end, "sha256": rec.sha256}
        if rec.skip:
            entry["skip"] = list(rec.skip)
        if self.writer is not None and self.writer.last_pts_s is not None:
            entry["last_pts_s"] = round(self.writer.last_pts_s, 6)
        assert self.fraglog is not None
        self.fraglog.append(entry)

    def _on_sync(self) -> None:
        if self.fraglog is not None:
            self.fraglog.sync()

    def _open_segment(self, pts_s: float) -> None:
        self.segment_no += 1
        # A process that replaces a killed one must not reuse a number its predecessor took.
        while (self.session_dir / f"{self.spec.name}/{self.segment_no:04d}.mp4").exists():
            self.segment_no += 1
        self.writer_rel = f"{self.spec.name}/{self.segment_no:04d}.mp4"
        settings = SegmentSettings(
            width=self.spec.width, height=self.spec.height, fps=self.spec.fps, encoder=self.spec.encoder,
            gop=self.spec.gop, fragment_ms=self.job.profile.fragment_ms,
            fsync_interval_ms=self.job.profile.fsync_interval_ms, audio=self.audio is not None)
        assert self.clock is not None
        self.writer = SegmentWriter(self.session_dir / self.writer_rel, self.writer_rel, settings, self.clock,
                                    on_fragment=self._on_fragment, on_sync=self._on_sync)
        seg_s = self.spec.segment_s
        # Segment boundaries sit at multiples of segment_s on the session timeline, so the
        # segments of all streams line up.
        self.segment_end_pts_s = (int(pts_s // seg_s) + 1) * seg_s
        self._dropped_at_open = self.dropped_total
        self.last_fragment_end = 0
        self.send("segment_open", file=self.writer_rel, first_pts_s=pts_s, stage=self.stage)

    def _close_segment(self, finalise: bool = True) -> None:
        w = self.writer
        if w is None:
            return
        self.writer = None
        w.dropped = self.dropped_total - self._dropped_at_open
        if w.frames == 0:
            # Opened ahead of a first frame that never came (stopped or paused first): it holds
            # no media at all, so it is not a segment.
            w.abandon()
            w.path.unlink(missing_ok=True)
            self.send("segment_discarded", file=w.rel)
            return
        try:
            result = w.close() if finalise else w.abandon()
        except OSError as exc:
            result = w.abandon()
            self.event("error", message=f"segment {w.rel} could not be finalised: {exc}", file=w.rel)
        self.counters.bytes += result.size
        self._report_closed(result, self.stage)

    def _report_closed(self, result: SegmentResult, stage: int) -> None:
        def work() -> None:
            digest = sha256_file(result.path) if result.closed else None
            payload = asdict(result)
            payload.pop("path")
            self.send("segment_closed", sha256=digest, stage=stage, **payload)
        self.hasher.submit(work)

    # control -----------------------------------------------------------------------------
    def _handle_command(self, cmd: tuple) -> None:
        kind = cmd[0]
        if kind == "stop":
            self.stop_ns = cmd[1]
        elif kind == "state":
            for k, v in cmd[1].items():
                setattr(self.state, k, v)
        elif kind == "pause":  # ("pause", at_ns, banner_text)
            self.pause_at_ns, self.pause_banner = cmd[1], cmd[2]
        elif kind == "resume":  # ("resume", stage, banner_text, banner_until_ns)
            self.stage = cmd[1]
            self.paused = False
            self.state.banner = cmd[2]
            self.state.stage = cmd[1]
            self.pending_banner_until_ns = cmd[3]
        elif kind == "banner":
            self.state.banner = cmd[1]
            self.pending_banner_until_ns = cmd[2]
        elif kind == "photo":
            self.photo_requests.append(cmd[1])
        elif kind == "pedals":  # {"brake": [(start_ns, end_ns | None), ...], "clutch": [...]}
            self.pedal_intervals = cmd[1]

    def _poll_commands(self, timeout: float = 0.0) -> None:
        try:
            while True:
                self._handle_command(self.cmd_q.get(timeout=timeout) if timeout else self.cmd_q.get_nowait())
                timeout = 0.0
        except queue.Empty:
            return

    def _take_photo(self, image, capture_ns: int) -> None:
        """Encode the still now (this frame, with its overlay); write it in the background, so a
        slow disk never costs frames."""
        import cv2
        for req in self.photo_requests:
            ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                self.event("error", message=f"photo {req['file']} could not be encoded")
                continue
            data = jpg.tobytes()

            def write(req=req, data=data) -> None:
                path = self.session_dir / req["file"]
                path.parent.mkdir(exist_ok=True)
                durable.write_file_atomic(path, data)
                self.send("photo", file=req["file"], role=req.get("role"), capture_ns=capture_ns,
                          sha256=hashlib.sha256(data).hexdigest())
            self.hasher.submit(write)
        self.photo_requests.clear()

    # main loop ---------------------------------------------------------------------------
    def _write_audio_until(self, until_ns: int) -> None:
        if self.audio is None or self.audio_timeline is None:
            return
        while True:
            try:
                block = self.audio_blocks.queue[0]
            except IndexError:
                return
            if block.capture_ns >= until_ns:
                return
            self.audio_blocks.get_nowait()
            n = block.samples.shape[0]
            if self.stop_ns is not None:  # trim samples past the stop instant
                keep = int((self.stop_ns - block.capture_ns) * block.sample_rate // NS_PER_S)
                if keep <= 0:
                    continue
                block.samples = block.samples[:min(n, keep)]
            if self.paused or self.writer is None:
                continue
            pts = self.audio_timeline.place(block.capture_ns, block.samples.shape[0])
            self.writer.write_audio(block.samples, pts)

    def run(self) -> None:
        import cv2
        cv2.setNumThreads(1)  # one thread per stream: parallelism comes from the stream processes
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller decides when to stop
        signal.signal(signal.SIGTERM, self._on_sigterm)
        from sessions.evidence.lock import hold_shared
        self._lock_fd = hold_shared(self.session_dir)  # released by the kernel whenever this process ends
        ok, why = self.open_sources()
        self.send("ready", ok=ok, message=why, pid=os.getpid())
        # Wait for the session clock (and give up if the controller dies meanwhile).
        parent = os.getppid()
        while True:
            try:
                cmd = self.cmd_q.get(timeout=0.5)
            except queue.Empty:
                if os.getppid() != parent:
                    self._shutdown_sources()
                    return
                continue
            if cmd[0] == "check":
                self._run_check(SessionClock.from_json(cmd[1]), cmd[2], Path(cmd[3]))
                continue
            if cmd[0] == "start":
                self.clock = SessionClock.from_json(cmd[1])
                break
            if cmd[0] in ("stop", "abort"):
                self._shutdown_sources()
                self.send("done", reason="aborted")
                return
            if cmd[0] in ("state", "pedals"):  # the sensors' state for the first frames
                self._handle_command(cmd)
        self.stream_dir.mkdir(exist_ok=True)
        fsync_dir(self.session_dir)
        self.fraglog = ChainedLog(self.stream_dir / "fragments.jsonl", fsync=False)
        self.overlay = Overlay(self.spec.overlay, self.spec.name, self.spec.width, self.spec.height, self.clock)
        self.state.stage = self.stage
        assert self.video is not None
        # The first encoder is made before the first frame exists: its start-up must not cost frames.
        self._open_segment(max(0.0, self.clock.pts_s(time.monotonic_ns())))
        self.video.start(self.clock)
        threads = [threading.Thread(target=self._capture_loop, name=f"capture-{self.spec.name}", daemon=True)]
        if self.audio is not None:
            self.audio.start(self.clock)
            self.audio_timeline = AudioTimeline(self.clock)
            threads.append(threading.Thread(target=self._audio_loop, name=f"audio-{self.spec.name}", daemon=True))
        for t in threads:
            t.start()
        self.pause_at_ns: int | None = None
        self.pause_banner = ""
        next_stats = time.monotonic() + STATS_INTERVAL_S
        # The stall watch counts from the session start (the first frame is due then), not from
        # whatever ran before it (the pre-exam check).
        self.last_frame_mono = time.monotonic() + max(0.0, -self.clock.pts_s(time.monotonic_ns()))
        try:
            self._loop(parent, next_stats)
        except OSError as exc:
            self._disk_error(exc)
        finally:
            self.stopping.set()
            for t in threads:
                t.join(timeout=2)
            self._shutdown_sources()
            self.hasher.shutdown(wait=True)
            if self.fraglog is not None:
                self.fraglog.close()
            self.send("stats", **self._stats())
            self.send("done", reason=self.exit_reason)

    def _run_check(self, clock: SessionClock, seconds: float, scratch: Path) -> None:
        """Pre-exam check: run the whole pipeline (capture, overlay, encoding) for ``seconds``
        into a scratch file and report what it achieved: frames at the stream's rate, the
        encoder keeping up in real time, the bitrate (for the free-disk check), the sound level."""
        import math
        self.clock = clock
        self.stop_ns = clock.start_ns + round(seconds * NS_PER_S)
        # The rate is counted after a short warm-up (caches, first allocations), over the rest.
        warmup = min(0.5, seconds / 4)
        warm_ns = clock.start_ns + round(warmup * NS_PER_S)
        result: dict[str, Any] = {"seconds": seconds - warmup, "frames": 0, "dropped": 0, "bytes": 0, "audio_dbfs": None,
                                  "error": None}
        if self.fault_open or self.video is None:
            result["error"] = "camera could not be opened"
            self.send("check_result", **result)
            return
        threads = []
        writer = None
        sq_sum, n_samples = 0.0, 0
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            settings = SegmentSettings(self.spec.width, self.spec.height, self.spec.fps, self.spec.encoder,
                                       self.spec.gop, self.job.profile.fragment_ms, self.job.profile.fsync_interval_ms,
                                       audio=False)
            # Encoder first, as in a session: the check measures the pipeline, not its start-up.
            writer = SegmentWriter(scratch / f"{self.spec.name}.mp4", self.spec.name, settings, clock)
            overlay = Overlay(self.spec.overlay, self.spec.name, self.spec.width, self.spec.height, clock)
            self.video.start(clock)
            threads.append(threading.Thread(target=self._capture_loop, daemon=True))
            if self.audio is not None and not self.audio_fault_open:
                self.audio.start(clock)
                threads.append(threading.Thread(target=self._audio_loop, daemon=True))
            for t in threads:
                t.start()
            deadline = time.monotonic() + seconds + 2
            while time.monotonic() < deadline:
                while not self.audio_blocks.empty():
                    block = self.audio_blocks.get_nowait()
                    x = block.samples.astype(np.float64)
                    sq_sum += float((x * x).sum())
                    n_samples += x.size
                try:
                    frame = self.frames.get(timeout=0.05)
                except queue.Empty:
                    if time.monotonic_ns() >= self.stop_ns:
                        break
                    continue
                if frame.capture_ns >= self.stop_ns:
                    break
                overlay.apply(frame.image, frame.capture_ns)
                writer.write_video(frame.image, frame.capture_ns)
                if frame.capture_ns >= warm_ns:
                    result["frames"] += 1
        except (SourceError, OSError) as exc:
            result["error"] = str(exc)
        finally:
            self.stopping.set()
            for t in threads:
                t.join(timeout=2)
            if writer is not None:
                try:
                    result["bytes"] = writer.close().size
                except OSError as exc:
                    result["error"] = result["error"] or str(exc)
                shutil.rmtree(scratch / f"{self.spec.name}.mp4", ignore_errors=True)
                (scratch / f"{self.spec.name}.mp4").unlink(missing_ok=True)
        result["dropped"] = self.dropped_total
        result["bytes"] = round(result["bytes"] * (seconds - warmup) / seconds)  # bitrate over the same span
        if n_samples:
            rms = math.sqrt(sq_sum / n_samples)
            result["audio_dbfs"] = round(20 * math.log10(rms / 32768), 1) if rms > 0 else -200.0
        # Back to the state the session start expects.
        self.stopping.clear()
        self.stop_ns = None
        self.counters = Counters()
        for q in (self.frames, self.audio_blocks):
            while not q.empty():
                q.get_nowait()
        if self.video is not None and hasattr(self.video, "_pacer"):
            self.video._pacer = None
        self.send("check_result", **result)

    def _on_sigterm(self, *_: object) -> None:
        """SIGTERM while recording ends the segment cleanly; before that (opening devices, waiting
        for the start, checking) there is nothing to finalise, so the process ends at once."""
        if self.clock is None:
            raise SystemExit(0)
        self._request_stop()

    def _request_stop(self) -> None:
        self.stop_ns = min(self.stop_ns or time.monotonic_ns(), time.monotonic_ns())

    def _shutdown_sources(self) -> None:
        for src in (self.video, self.audio):
            if src is not None:
                try:
                    src.close()
                except Exception:  # closing a dead device must not hide the real outcome
                    log.exception("%s: closing source", self.spec.name)

    @property
    def dropped_total(self) -> int:
        """Frames lost: not taken by the encoder in time, or never captured because the process
        was too late for them (a replay source skips those slots, as a camera's driver would)."""
        return self.counters.dropped + getattr(self.video, "skipped", 0)

    def _stats(self) -> dict:
        c = self.counters
        return {"captured": c.captured, "dropped": self.dropped_total, "encoded": c.encoded,
                "bytes": c.bytes + (self.writer.file.size if self.writer else 0),
                "last_pts_s": c.last_pts_s, "fault": self.fault_open, "audio_fault": self.audio_fault_open,
                "queue": self.frames.qsize(), "skipped": getattr(self.video, "skipped", 0), "stage": self.stage,
                "paused": self.paused}

    def _loop(self, parent: int, next_stats: float) -> None:
        assert self.clock is not None and self.overlay is not None
        while True:
            self._poll_commands()
            if os.getppid() != parent:  # the controller died: end the segments cleanly
                log.error("%s: controller gone, closing segments", self.spec.name)
                self.exit_reason = "controller-lost"
                self._request_stop()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL_S
                self.send("stats", **self._stats())
            try:
                frame = self.frames.get(timeout=0.05)
            except queue.Empty:
                frame = None
                if self.stop_ns is not None and time.monotonic_ns() >= self.stop_ns + NS_PER_S // 2:
                    break  # the source delivers nothing more: don't wait for it
                if not self.fault_open and time.monotonic() - self.last_frame_mono > self.job.stall_s:
                    self.fault_open = True  # the capture thread will reopen when read() fails
                    self.event("fault", device=f"camera {self.spec.name}", what="video",
                               message=f"no frame for {self.job.stall_s:.1f} s (stalled)")
                continue
            self.last_frame_mono = time.monotonic()
            self._poll_commands()  # what arrived while waiting (a pedal edge) applies to this frame
            if self.stop_ns is not None and frame.capture_ns >= self.stop_ns:
                break
            if self.pause_at_ns is not None and frame.capture_ns >= self.pause_at_ns:
                self._write_audio_until(self.pause_at_ns)
                self._close_segment()
                self.paused = True
                self.pause_at_ns = None
                self.state.banner = None
                self.send("paused", stage=self.stage)
            if self.paused:
                self._write_audio_until(frame.capture_ns)
                continue
            pts_s = self.clock.pts_s(frame.capture_ns)
            if self.writer is not None and pts_s >= self.segment_end_pts_s:
                self._write_audio_until(frame.capture_ns)
                self._close_segment()
            if self.writer is None:
                self._open_segment(pts_s)
            if self.pending_banner_until_ns and frame.capture_ns >= self.pending_banner_until_ns:
                self.state.banner = None
                self.pending_banner_until_ns = 0
            if self.pause_at_ns is not None and frame.capture_ns >= self.pause_at_ns - 3 * NS_PER_S:
                self.state.banner = self.pause_banner
            if self.pedal_intervals is not None:
                # Frame-exact: lit on exactly the frames captured during an actuation.
                t = frame.capture_ns
                for pedal, spans in self.pedal_intervals.items():
                    setattr(self.state, pedal, any(s0 <= t and (s1 is None or t < s1) for s0, s1 in spans))
            self.overlay.apply(frame.image, frame.capture_ns, self.state)
            if self.photo_requests:
                self._take_photo(frame.image, frame.capture_ns)
            assert self.writer is not None
            self.writer.write_video(frame.image, frame.capture_ns)
            self.counters.encoded += 1
            self.counters.last_pts_s = pts_s
            self._write_audio_until(frame.capture_ns)
        # Stop: the rest of the audio up to the stop instant, then close the last segment.
        if self.stop_ns is not None and self.audio is not None and not self.paused:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and not self.audio_fault_open:
                tail = list(self.audio_blocks.queue)
                if tail and tail[-1].capture_ns + tail[-1].samples.shape[0] * NS_PER_S // 48000 >= self.stop_ns:
                    break
                time.sleep(0.01)
            self._write_audio_until(self.stop_ns)
        self._close_segment()

    def _disk_error(self, exc: OSError) -> None:
        """The disk is full (or failing): stop, and leave the segment ending on its last complete
        fragment so it plays without repair. The torn bytes are kept in recovered/ if they fit."""
        import errno
        self.exit_reason = "disk-full" if exc.errno == errno.ENOSPC else "io-error"
        self.send("io_error", errno=exc.errno, message=str(exc), path=str(self.session_dir))
        if self.writer is not None:
            w, self.writer = self.writer, None
            result = w.abandon()
            keep = self.last_fragment_end
            if 0 < keep < result.path.stat().st_size:
                self._trim_tail(result.path, keep)
                result.size = keep
            self._report_closed(result, self.stage)

    def _trim_tail(self, path: Path, keep: int) -> None:
        with open(path, "rb") as f:
            f.seek(keep)
            tail = f.read()
        fd = durable.open_fd(path, os.O_WRONLY)
        try:
            durable.truncate(fd, keep)
            durable.fsync(fd)
        finally:
            durable.close(fd)
        rel = path.relative_to(self.session_dir).as_posix()
        try:
            (self.session_dir / "recovered").mkdir(exist_ok=True)
            durable.write_file_atomic(self.session_dir / "recovered" / f"{rel.replace('/', '__')}.from-{keep}", tail)
        except OSError as exc:
            self.event("error", message=f"{len(tail)} bytes of an incomplete fragment of {rel} could not be "
                                        f"kept ({exc})", file=rel)


def run_stream(job: StreamJob, out_conn, cmd_q) -> None:
    """Process entry point."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s {job.spec.name}: %(message)s")
    StreamProcess(job, out_conn, cmd_q).run()
