"""The body of one stream process: capture -> stage gate -> overlay -> segment and photo sinks.

Each camera runs in its own process so the streams use both cores and a hung driver stalls
nothing else. The process reads the controller's commands (sessions.recorder.messages) from its
queue and sends its reports up its pipe. It opens its devices as soon as it starts, usually long
before there is a session (warm, between exams): it then reads the camera as it will in the
session (a preview: thumbnails for the console, its frame rate, drops and faults in the stats and
events), writes nothing, and runs the pre-exam check when asked. The session's folder comes with
``SessionDir``, the session clock with ``Start``; from then on the main thread takes each frame
from the camera's source thread, asks the stage gate whether and how to record it, draws the
overlay and hands it to the sinks. When the controller dies (the lifeline pipe it holds reaches
end of file), the process closes its segments and ends.
"""
from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from capture.base import AudioBlock, Frame
from core.clock import NS_PER_S, SessionClock
from muxer.overlay import Overlay
from sessions.recorder.messages import (Abort, Command, Done, IoError, Pause, PedalSpans, Ready, Report, Resume,
                                        RunCheck, SensorOverlay, SessionDir, Start, Stats, Stop, StreamEvent,
                                        TakePhoto, Paused, Thumbnail)
from sessions.recorder.stream.check import run_check
from sessions.recorder.stream.job import StopLine, StreamJob
from sessions.recorder.stream.photo_sink import PhotoSink
from sessions.recorder.stream.segment_sink import SegmentSink
from sessions.recorder.stream.source_thread import SourceThread
from sessions.recorder.stream.stage_gate import StageGate

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 0.5  # also the controller's sign of life for its watchdog
FRAME_WAIT_S = 0.05     # how long the loop waits for a frame before looking at its commands again
AUDIO_QUEUE_BLOCKS = 2000
AUDIO_FULL_WAIT_S = 1.0
STOP_GRACE_NS = NS_PER_S // 2  # past the stop instant with no frame: the source delivers nothing more
THUMB_INTERVAL_S = 0.5  # the console's live picture: about 2 fps
THUMB_WIDTH = 320
PREVIEW_WAIT_S = 0.02   # warm: how long the loop waits for a frame before looking at its commands again


class StreamProcess:
    """One stream's pipeline (constructed in the child process)."""

    def __init__(self, job: StreamJob, out_conn, cmd_q, lifeline=None):
        self.job = job
        self.spec = job.spec
        self.name = job.spec.name
        self.out_conn = out_conn
        self.cmd_q = cmd_q
        # The read end of a pipe only the controller holds open (it never writes): end of file
        # on it is the controller's death, however it died. (Not the parent pid: a stream
        # process is forked by the forkserver, so its parent was never the controller.)
        self.lifeline = lifeline
        self.session_dir = Path(job.session_dir) if job.session_dir else None
        self._send_lock = threading.Lock()
        self.clock: SessionClock | None = None
        self.stop_line = StopLine()
        self.gate = StageGate()
        # One background worker writes stills and hashes closed segments, in order, off the frame
        # path, and below it in priority: hashing a closed 5-minute 1080p segment (over 100 MB) at
        # full weight took a core from the encoders and cost a frame on a machine half loaded.
        self.background = concurrent.futures.ThreadPoolExecutor(max_workers=1, initializer=_lower_priority)
        self.photos: PhotoSink | None = None  # made with the session's folder
        # A process replacing a dead one during a session starts with the folder and its start
        # command waiting: no preview for it, it records at once.
        self.replacing = self.session_dir is not None
        self.video: SourceThread[Frame] | None = None
        self.audio: SourceThread[AudioBlock] | None = None
        self.segments: SegmentSink | None = None
        self.encoded = 0
        self.last_pts_s: float | None = None
        self.last_frame_mono = time.monotonic()
        self.exit_reason = "stop"
        self.next_thumbnail = 0.0
        self._preview_line: StopLine | None = None  # the preview run's stop line, while it runs

    # reports ---------------------------------------------------------------------------------
    def send(self, report: Report) -> None:
        with self._send_lock:  # capture, background and main threads all report
            try:
                self.out_conn.send(report)
            except (BrokenPipeError, OSError):
                pass  # the controller is gone; the lifeline check ends this process

    def event(self, type_: str, capture_ns: int | None = None, **fields: Any) -> None:
        self.send(StreamEvent(self.name, type_, capture_ns or time.monotonic_ns(), {"stream": self.name, **fields}))

    # set-up ----------------------------------------------------------------------------------
    def open_sources(self) -> tuple[bool, str]:
        from capture.factory import audio_source, video_source
        self.video = SourceThread(video_source(self.spec, self.job.profile, realtime=self.job.realtime),
                                  name=f"capture-{self.name}", device=f"camera {self.name}", what="video",
                                  queue_items=self.spec.queue_frames, full_wait_s=0 if self.job.realtime else None,
                                  skip_before_start=True, event=self.event)
        if self.spec.audio:
            self.audio = SourceThread(audio_source(self.spec, self.job.profile, realtime=self.job.realtime),
                                      name=f"audio-{self.name}", device=f"audio of {self.name}", what="audio",
                                      queue_items=AUDIO_QUEUE_BLOCKS, full_wait_s=AUDIO_FULL_WAIT_S,
                                      skip_before_start=False, event=self.event)
        problems = [why for why in (t.open() for t in (self.video, self.audio) if t is not None) if why]
        return (not problems, "; ".join(problems))

    def _shutdown_sources(self) -> None:
        for thread in (self.video, self.audio):
            if thread is not None:
                thread.close()

    # commands --------------------------------------------------------------------------------
    def _handle(self, cmd: Command) -> None:
        """A command while recording."""
        match cmd:
            case Stop(at_ns=at_ns):
                self.stop_line.at_ns = at_ns
            case SensorOverlay():
                self.gate.sensor_values(cmd)
            case PedalSpans():
                self.gate.pedal_spans(cmd)
            case Pause():
                self.gate.pause(cmd)
            case Resume():
                self.gate.resume(cmd)
            case TakePhoto():
                if self.photos is not None:
                    self.photos.request(cmd)
            case Start() | RunCheck() | Abort():
                pass  # recording already: a start or check is late, and an abort follows a stop

    def _poll_commands(self) -> None:
        try:
            while True:
                self._handle(self.cmd_q.get_nowait())
        except queue.Empty:
            return

    def controller_gone(self) -> bool:
        """The controller's end of the lifeline closed: it died (or ended without a word)."""
        if self.lifeline is None:
            return False
        try:
            return self.lifeline.poll()
        except (OSError, EOFError):
            return True

    def _standby(self) -> bool:
        """Warm, until the session clock arrives (True), or an abort or the controller's death
        (False: the devices are closed). Meanwhile the sources are read as in a session (a
        preview), for the console and the health of the camera; nothing is written."""
        self._preview_start()
        next_stats = time.monotonic()
        while True:
            if self.controller_gone():
                self._preview_stop()
                self._shutdown_sources()
                return False
            try:
                cmd = self.cmd_q.get_nowait() if self._preview_line else self.cmd_q.get(timeout=PREVIEW_WAIT_S)
            except queue.Empty:
                cmd = None
            match cmd:
                case SessionDir(path=path):
                    self._enter_session(path)
                case RunCheck(clock=clock, seconds=seconds, scratch_dir=scratch):
                    assert self.video is not None
                    self._preview_stop()
                    self.send(run_check(self.job, self.video, self.audio, clock, seconds, Path(scratch),
                                        on_frame=self._thumbnail_if_due))
                    self._preview_start()
                case Start(clock=clock):
                    self._preview_stop()
                    if self.session_dir is None:  # a controller that skipped SessionDir: nowhere to write
                        self.event("error", message="start without a session folder: not recording")
                        self._shutdown_sources()
                        self.send(Done(self.name, "aborted"))
                        return False
                    self.clock = clock
                    return True
                case Stop() | Abort():
                    self._preview_stop()
                    self._shutdown_sources()
                    self.send(Done(self.name, "aborted"))
                    return False
                case SensorOverlay() | PedalSpans():  # the sensors' state for the first frames
                    self._handle(cmd)
                case _:
                    pass  # a pause, resume or photo before the start has nothing to act on
            if self._preview_line is not None:
                self._preview_step()
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + STATS_INTERVAL_S
                self.send(self._stats())

    def _enter_session(self, folder: str) -> None:
        """The session's folder: held (shared lock, released by the kernel whenever this process
        ends) before anything is written into it."""
        from sessions.evidence.lock import hold_shared
        self.job.session_dir = folder
        self.session_dir = Path(folder)
        self.photos = PhotoSink(self.session_dir, self.name, send=self.send, event=self.event,
                                background=self.background)
        self._lock_fd = hold_shared(self.session_dir)

    # preview (warm, no session) ----------------------------------------------------------------
    def _preview_start(self) -> None:
        """Read the sources on a clock of their own. Not for a run as fast as possible (a
        benchmark's replay would spin), nor for a replacing process: such a process waits for
        its commands only."""
        if not self.job.realtime or self.video is None or self.replacing:
            return
        clock = SessionClock.start_now()
        self._preview_line = StopLine()
        for thread in (self.video, self.audio):
            if thread is not None:
                thread.start(clock, self._preview_line)
        self.last_frame_mono = time.monotonic()

    def _preview_stop(self) -> None:
        """End the preview run: the sources stay open, their threads are rewound for what comes next."""
        if self._preview_line is None:
            return
        self._preview_line = None
        for thread in (self.video, self.audio):
            if thread is not None:
                thread.stop()
                thread.rewind()

    def _preview_step(self) -> None:
        """One frame of the preview (waiting up to PREVIEW_WAIT_S for it): a thumbnail when one
        is due, a stall fault as in the session; the sound is read (for the level) and let go."""
        video = self.video
        assert video is not None
        try:
            frame = video.queue.get(timeout=PREVIEW_WAIT_S)
        except queue.Empty:
            frame = None
        if self.audio is not None:
            try:
                while True:
                    self.audio.queue.get_nowait()
            except queue.Empty:
                pass
        now = time.monotonic()
        if frame is not None:
            self.last_frame_mono = now
            self._thumbnail_if_due(frame.image)
        elif video.faulted:
            self.last_frame_mono = now  # being reopened: the stall clock starts when it delivers again
        elif now - self.last_frame_mono > self.job.stall_s:
            video.mark_stalled()
            self.event("fault", device=f"camera {self.name}", what="video",
                       message=f"no frame for {self.job.stall_s:.1f} s (stalled)")

    def _thumbnail_if_due(self, image) -> None:
        if self.job.thumbnails and time.monotonic() >= self.next_thumbnail:
            self.next_thumbnail = time.monotonic() + THUMB_INTERVAL_S
            self._send_thumbnail(image)

    # running ---------------------------------------------------------------------------------
    def run(self) -> None:
        import cv2
        cv2.setNumThreads(1)  # one thread per stream: parallelism comes from the stream processes
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller decides when to stop
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if self.session_dir is not None:  # a process replacing a dead one: the session exists already
            self._enter_session(str(self.session_dir))
        ok, why = self.open_sources()
        self.send(Ready(self.name, ok, why, os.getpid()))
        if not self._standby():
            return
        clock = self.clock
        assert clock is not None and self.video is not None
        overlay = Overlay(self.spec.overlay, self.name, self.spec.width, self.spec.height, clock)
        self.segments = SegmentSink(self.job, clock, self.stop_line, self.audio, send=self.send, event=self.event,
                                    background=self.background, dropped_total=self.dropped_total)
        self.segments.start(max(0.0, clock.pts_s(time.monotonic_ns())), self.gate.stage)
        threads = [t for t in (self.video, self.audio) if t is not None]
        for thread in threads:
            thread.start(clock, self.stop_line)
        late_ns = time.monotonic_ns() - clock.start_ns
        if late_ns > 0 and not self.replacing:  # START_LEAD_NS too short here: first frames missed
            log.warning("%s: armed %.0f ms after the session start", self.name, late_ns / 1e6)
        # The stall watch counts from the session start (the first frame is due then), not from
        # whatever ran before it (the pre-exam check).
        self.last_frame_mono = time.monotonic() + max(0.0, -clock.pts_s(time.monotonic_ns()))
        try:
            self._record(clock, overlay, self.segments)
        except OSError as exc:
            self._disk_error(exc)
        finally:
            for thread in threads:
                thread.stop()
            self._shutdown_sources()
            self.background.shutdown(wait=True)
            self.segments.close_log()
            self._report_progress()
            self.send(Done(self.name, self.exit_reason))

    def _on_sigterm(self, *_: object) -> None:
        """SIGTERM while recording ends the segment cleanly; before that (opening devices, waiting
        for the start, checking) there is nothing to finalise, so the process ends at once."""
        if self.clock is None:
            raise SystemExit(0)
        self.stop_line.now(time.monotonic_ns())

    def _record(self, clock: SessionClock, overlay: Overlay, segments: SegmentSink) -> None:
        """The frame loop: until the stop instant, every frame through the gate, the overlay and
        the sinks; commands are looked at before each frame and just before it is drawn."""
        assert self.video is not None
        video, frames, gate, stop, photos = self.video, self.video.queue, self.gate, self.stop_line, self.photos
        next_stats = time.monotonic() + STATS_INTERVAL_S
        while True:
            self._poll_commands()
            if self.controller_gone() and self.exit_reason != "controller-lost":  # end the segments cleanly
                log.error("%s: controller gone, closing segments", self.name)
                self.exit_reason = "controller-lost"
                stop.now(time.monotonic_ns())
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL_S
                self._report_progress()
            try:
                frame = frames.get(timeout=segments.writer.wait_s(FRAME_WAIT_S) if segments.writer else FRAME_WAIT_S)
            except queue.Empty:
                if segments.writer is not None and segments.writer.flush_if_due():
                    continue  # a fragment whose oldest frame reached fragment_ms: written now
                if stop.at_ns is not None and time.monotonic_ns() >= stop.at_ns + STOP_GRACE_NS:
                    break  # the source delivers nothing more: don't wait for it
                if not video.faulted and time.monotonic() - self.last_frame_mono > self.job.stall_s:
                    video.mark_stalled()
                    self.event("fault", device=f"camera {self.name}", what="video",
                               message=f"no frame for {self.job.stall_s:.1f} s (stalled)")
                continue
            self.last_frame_mono = time.monotonic()
            self._thumbnail_if_due(frame.image)
            self._poll_commands()  # what arrived while waiting (a pedal edge) applies to this frame
            t = frame.capture_ns
            if stop.passed(t):
                break
            if gate.pause_due(t):
                assert gate.pause_at_ns is not None
                segments.pause(gate.pause_at_ns, gate.stage)
                gate.enter_pause()
                self.send(Paused(self.name, gate.stage))
            if gate.paused:
                segments.take_audio_until(t)
                continue
            pts_s = clock.pts_s(t)
            overlay.apply(frame.image, t, gate.dress(t))
            if photos.requests:
                photos.take(frame.image, t)
            segments.write(frame, pts_s, gate.stage)
            self.encoded += 1
            self.last_pts_s = pts_s
        segments.stop(gate.stage, gate.paused)

    def _send_thumbnail(self, image) -> None:
        """A small JPEG of the frame just captured, for the console (a nearest-neighbour downscale
        and the encode of a 320-pixel-wide picture: well under a millisecond each)."""
        import cv2
        h, w = image.shape[:2]
        small = cv2.resize(image, (THUMB_WIDTH, max(2, h * THUMB_WIDTH // w)), interpolation=cv2.INTER_NEAREST)
        ok, jpg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
        if ok:
            self.send(Thumbnail(self.name, jpg.tobytes()))

    def _disk_error(self, exc: OSError) -> None:
        """The disk is full (or failing): say so and stop, the open segment cut back to its last
        complete fragment."""
        self.exit_reason = "disk-full" if exc.errno == errno.ENOSPC else "io-error"
        self.send(IoError(self.name, exc.errno, str(exc), str(self.session_dir)))
        if self.segments is not None:
            self.segments.cut_at_last_fragment(self.gate.stage)

    # counters --------------------------------------------------------------------------------
    def dropped_total(self) -> int:
        """Frames lost: not taken by the encoder in time, or never captured because the process
        was too late for them (a replay source skips those slots, as a camera's driver would)."""
        v = self.video
        return 0 if v is None else v.dropped + v.skipped

    def _report_progress(self) -> None:
        """The counters, and the newest fragment that reached the disk since the last report."""
        self.send(self._stats())
        fragment = self.segments.newest_fragment() if self.segments is not None else None
        if fragment is not None:
            self.send(fragment)

    def _stats(self) -> Stats:
        v, a = self.video, self.audio
        return Stats(stream=self.name, captured=v.captured if v else 0, dropped=self.dropped_total(),
                     encoded=self.encoded, bytes=self.segments.bytes if self.segments else 0,
                     last_pts_s=self.last_pts_s, fault=v.faulted if v else False,
                     audio_fault=a.faulted if a else False, queue=v.queue.qsize() if v else 0,
                     skipped=v.skipped if v else 0, stage=self.gate.stage, paused=self.gate.paused,
                     audio_dbfs=_dbfs(a.latest.samples) if a is not None and a.latest is not None else None,
                     preview=self.clock is None)


def _dbfs(samples) -> float:
    """Level of a block of 16-bit samples in dB full scale (-120 for silence)."""
    import numpy as np
    x = samples.astype(np.float32)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return round(20 * float(np.log10(rms / 32768)), 1) if rms > 0.33 else -120.0


BACKGROUND_NICE = 10  # the background worker's niceness above the stream's: about a tenth of its weight


def _lower_priority() -> None:
    """Lower the calling thread's scheduling priority (Linux schedules threads one by one; raising
    one's own niceness needs no privilege)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE)
    except OSError as exc:
        log.warning("background worker keeps its priority: %s", exc)


def run_stream(job: StreamJob, out_conn, cmd_q, lifeline=None) -> None:
    """Process entry point (``lifeline``: the read end of the pipe whose other end only the
    controller holds)."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s {job.spec.name}: %(message)s")
    StreamProcess(job, out_conn, cmd_q, lifeline).run()
