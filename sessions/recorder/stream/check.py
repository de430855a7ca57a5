"""The pre-exam check of one stream: the same source threads, overlay and encoder as the session,
for a few seconds into a scratch file, to show that the stream delivers frames at its rate, that
the encoder keeps up in real time, what CPU a frame costs (for the processor check), what
bitrate it makes (for the free-disk check) and that the sound is not silent."""
from __future__ import annotations

import math
import queue
import time
from pathlib import Path
from typing import Callable

import numpy as np

from capture.base import AudioBlock, Frame, SourceError
from core.clock import NS_PER_S, SessionClock
from muxer.overlay import Overlay
from muxer.segment import SegmentSettings, SegmentWriter
from sessions.recorder.messages import CheckDone
from sessions.recorder.stream.heap import give_back_free_memory
from sessions.recorder.stream.job import StopLine, StreamJob
from sessions.recorder.stream.source_thread import SourceThread

WARMUP_S = 0.5        # the rate is counted after caches and first allocations, over the rest
SILENCE_DBFS = -200.0  # what a block of digital zeros measures


class SoundLevel:
    """RMS level of the blocks taken, in dBFS of 16-bit samples."""

    def __init__(self) -> None:
        self._sq_sum = 0.0
        self._samples = 0

    def take_all(self, blocks: "queue.Queue[AudioBlock]") -> None:
        while True:
            try:
                block = blocks.get_nowait()
            except queue.Empty:
                return
            x = block.samples.astype(np.float64)
            self._sq_sum += float((x * x).sum())
            self._samples += x.size

    def dbfs(self) -> float | None:
        if not self._samples:
            return None
        rms = math.sqrt(self._sq_sum / self._samples)
        return round(20 * math.log10(rms / 32768), 1) if rms > 0 else SILENCE_DBFS


def run_check(job: StreamJob, video: SourceThread[Frame], audio: SourceThread[AudioBlock] | None,
              clock: SessionClock, seconds: float, scratch: Path,
              on_frame: Callable[[np.ndarray], None] | None = None) -> CheckDone:
    """Run the stream's pipeline for ``seconds`` of ``clock`` and say what it achieved. The
    sources stay open, and their threads are rewound for the session. ``on_frame`` sees each
    picture as captured (the console's thumbnails go on during the check)."""
    spec = job.spec
    warmup = min(WARMUP_S, seconds / 4)
    measured_s = seconds - warmup
    if video.faulted:
        return CheckDone(spec.name, measured_s, error="camera could not be opened")
    stop = StopLine(clock.start_ns + round(seconds * NS_PER_S))
    warm_ns = clock.start_ns + round(warmup * NS_PER_S)
    level = SoundLevel()
    frames, size, error = 0, 0, None
    cpu_warm: float | None = None  # the process's CPU clock when the first measured frame was written
    cpu_s = 0.0
    started: list[SourceThread] = []
    writer: SegmentWriter | None = None
    target = scratch / f"{spec.name}.mp4"
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        settings = SegmentSettings(spec.width, spec.height, spec.fps, spec.encoder, spec.gop,
                                   job.profile.fragment_ms, job.profile.fsync_interval_ms, audio=False)
        # Encoder first, as in a session: the check measures the pipeline, not its start-up.
        writer = SegmentWriter(target, spec.name, settings, clock)
        overlay = Overlay(spec.overlay, spec.name, spec.width, spec.height, clock)
        video.start(clock, stop)
        started.append(video)
        if audio is not None and not audio.faulted:
            audio.start(clock, stop)
            started.append(audio)
        deadline = time.monotonic() + seconds + 2
        while time.monotonic() < deadline:
            if audio is not None:
                level.take_all(audio.queue)
            try:
                frame = video.queue.get(timeout=0.05)
            except queue.Empty:
                if time.monotonic_ns() >= stop.at_ns:
                    break
                continue
            if stop.passed(frame.capture_ns):
                break
            if on_frame is not None:
                on_frame(frame.image)
            overlay.apply(frame.image, frame.capture_ns)
            writer.write_video(frame.image, frame.capture_ns)
            if frame.capture_ns >= warm_ns:
                frames += 1
                # Every thread of the process (capture, overlay, encoder, muxer) from the first
                # measured frame written to the last: what the frames between cost the machine.
                if cpu_warm is None:
                    cpu_warm = time.process_time()
                else:
                    cpu_s = time.process_time() - cpu_warm
    except (SourceError, OSError) as exc:
        error = str(exc)
    finally:
        for thread in started:
            thread.stop()
        if writer is not None:
            try:
                size = writer.close().size
            except OSError as exc:
                error = error or str(exc)
            target.unlink(missing_ok=True)
            del writer
            give_back_free_memory()
    dropped = video.dropped + video.skipped
    for thread in (video, audio):
        if thread is not None:
            thread.rewind()
    return CheckDone(spec.name, measured_s, frames=frames, dropped=dropped,
                     bytes=round(size * measured_s / seconds),  # the bitrate over the same span
                     audio_dbfs=level.dbfs(), error=error,
                     cpu_s_per_frame=cpu_s / (frames - 1) if frames > 1 else None)
