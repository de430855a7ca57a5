"""The segment sink: a stream's recorded frames (and its sound) into numbered fragmented MP4
segments, <stream>/NNNN.mp4, with every fragment's hash in <stream>/fragments.jsonl.

A segment opens at the first frame to record and closes at the next frame past a multiple of
``segment_s`` on the session timeline (so the segments of all streams line up), at a pause and
at the stop. The sound is muxed up to each frame's capture instant, so both stay interleaved.
When the disk fills up, the open segment is cut back to its last complete fragment (the cut
bytes go to recovered/ if they fit) so it plays without repair.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable

from capture.base import AudioBlock, Frame
from core.clock import NS_PER_S, SessionClock
from muxer.fragment_file import FragmentRecord, fsync_dir
from muxer.segment import AudioTimeline, SegmentResult, SegmentSettings, SegmentWriter
from sessions.evidence.chain import ChainedLog
from sessions.evidence.layout import fragments_path, segment_name
from sessions.evidence.manifest import sha256_file
from sessions.evidence.recovered import cut_tail
from sessions.recorder.messages import (FragmentWritten, Report, SegmentClosed, SegmentDiscarded,
                                        SegmentOpened)
from sessions.recorder.stream.heap import HeapTrimmer, give_back_free_memory
from sessions.recorder.stream.job import StopLine, StreamJob
from sessions.recorder.stream.source_thread import SourceThread

log = logging.getLogger(__name__)

AUDIO_TAIL_WAIT_S = 1.0  # at the stop, how long to wait for the sound captured up to the stop instant


class SegmentSink:
    """Writes one stream's segments during a session (constructed in the stream process)."""

    def __init__(self, job: StreamJob, clock: SessionClock, stop: StopLine, audio: SourceThread[AudioBlock] | None,
                 *, send: Callable[[Report], None], event: Callable[..., None], background: Executor,
                 dropped_total: Callable[[], int]):
        self.spec = job.spec
        self.session_dir = Path(job.session_dir)
        self.stream_dir = self.session_dir / self.spec.name
        self.settings = SegmentSettings(
            width=self.spec.width, height=self.spec.height, fps=self.spec.fps, encoder=self.spec.encoder,
            gop=self.spec.gop, fragment_ms=job.profile.fragment_ms,
            fsync_interval_ms=job.profile.fsync_interval_ms, audio=audio is not None)
        self.clock = clock
        self.stop_line = stop
        self.audio = audio
        self.audio_timeline = AudioTimeline(clock) if audio is not None else None
        self._send = send
        self._event = event
        self._background = background
        self._dropped_total = dropped_total
        self.writer: SegmentWriter | None = None
        self._rel = ""             # the segment being written (or closed) now
        self.segment_no = job.first_segment
        self.segment_end_pts_s = 0.0
        self.closed_bytes = 0      # bytes of the segments already closed
        self._dropped_at_open = 0
        self._last_fragment_end = 0
        self._newest_fragment: tuple[str, int, int, str, str] | None = None
        self.fraglog: ChainedLog | None = None
        self._lock = threading.Lock()
        self._trimmer = HeapTrimmer()  # freed frames and encoder buffers go back to the system

    # start and stop --------------------------------------------------------------------------
    def start(self, first_pts_s: float, stage: int) -> None:
        """Create the stream's folder and fragment log and the first segment's encoder (made
        before the first frame exists: its start-up must not cost frames). Refused twice."""
        with self._lock:
            if self.fraglog is not None:
                raise RuntimeError(f"{self.spec.name}: segment sink already started")
            self.stream_dir.mkdir(exist_ok=True)
            fsync_dir(self.session_dir)
            self.fraglog = ChainedLog(fragments_path(self.session_dir, self.spec.name), fsync=False)
            self._open(first_pts_s, stage)

    def stop(self, stage: int, paused: bool) -> None:
        """At the stop: the sound up to the stop instant, then close the last segment. Refused
        before the start."""
        if self.fraglog is None:
            raise RuntimeError(f"{self.spec.name}: segment sink not started")
        stop_ns = self.stop_line.at_ns
        if stop_ns is not None and self.audio is not None and not paused:
            deadline = time.monotonic() + AUDIO_TAIL_WAIT_S
            while time.monotonic() < deadline and not self.audio.faulted:
                tail = list(self.audio.queue.queue)
                if tail and tail[-1].capture_ns + tail[-1].samples.shape[0] * NS_PER_S // tail[-1].sample_rate >= stop_ns:
                    break
                time.sleep(0.01)
            self.take_audio_until(stop_ns)
        self.close(stage)

    def close_log(self) -> None:
        """Last act of the process: the fragment log's file is closed (after the last segment)."""
        with self._lock:
            if self.fraglog is not None:
                self.fraglog.close()

    @property
    def bytes(self) -> int:
        """Bytes written so far, the open segment included."""
        return self.closed_bytes + (self.writer.file.size if self.writer else 0)

    # per frame -------------------------------------------------------------------------------
    def write(self, frame: Frame, pts_s: float, stage: int) -> None:
        """Record one frame (a new segment first when it crosses the boundary) and the sound up
        to its capture instant."""
        if self.writer is not None and pts_s >= self.segment_end_pts_s:
            if self.writer.frames == 0 and self._last_fragment_end == 0:
                # Opened ahead of a first frame that came after its boundary (a restarted stream
                # process): it becomes that frame's segment rather than an empty one, announced
                # (and checkpointed) and then deleted.
                self.segment_end_pts_s = self._boundary_after(pts_s)
            else:
                self.take_audio_until(frame.capture_ns)
                self.close(stage)
        if self.writer is None:
            self._open(pts_s, stage)
        self.writer.write_video(frame.image, frame.capture_ns)
        self.take_audio_until(frame.capture_ns)
        self._trimmer.maybe()

    def take_audio_until(self, until_ns: int) -> None:
        """Mux the sound captured before ``until_ns`` (dropped while no segment is open: paused)."""
        if self.audio_timeline is None or self.audio is None:
            return
        blocks = self.audio.queue
        stop_ns = self.stop_line.at_ns
        while True:
            try:
                block = blocks.queue[0]
            except IndexError:
                return
            if block.capture_ns >= until_ns:
                return
            blocks.get_nowait()
            n = block.samples.shape[0]
            if stop_ns is not None:  # trim samples past the stop instant
                keep = int((stop_ns - block.capture_ns) * block.sample_rate // NS_PER_S)
                if keep <= 0:
                    continue
                block.samples = block.samples[:min(n, keep)]
            if self.writer is None:
                continue
            pts = self.audio_timeline.place(block.capture_ns, block.samples.shape[0])
            self.writer.write_audio(block.samples, pts)

    def pause(self, at_ns: int, stage: int) -> None:
        """The stage ends at ``at_ns``: its sound up to then, and its segment closes."""
        self.take_audio_until(at_ns)
        self.close(stage)

    # segments --------------------------------------------------------------------------------
    def _open(self, pts_s: float, stage: int) -> None:
        self.segment_no += 1
        # A process that replaces a killed one must not reuse a number its predecessor took.
        while (self.session_dir / segment_name(self.spec.name, self.segment_no)).exists():
            self.segment_no += 1
        rel = self._rel = segment_name(self.spec.name, self.segment_no)
        self.writer = SegmentWriter(self.session_dir / rel, rel, self.settings, self.clock,
                                    on_fragment=self._on_fragment, on_sync=self._on_sync)
        self.segment_end_pts_s = self._boundary_after(pts_s)
        self._dropped_at_open = self._dropped_total()
        self._last_fragment_end = 0
        self._send(SegmentOpened(self.spec.name, rel, pts_s, stage))

    def _boundary_after(self, pts_s: float) -> float:
        # Segment boundaries sit at multiples of segment_s on the session timeline, so the
        # segments of all streams line up.
        seg_s = self.spec.segment_s
        return (int(pts_s // seg_s) + 1) * seg_s

    def close(self, stage: int) -> None:
        """Finalise the open segment (if any) into a regular MP4 and report it."""
        w = self.writer
        if w is None:
            return
        self.writer = None
        w.dropped = self._dropped_total() - self._dropped_at_open
        if w.frames == 0 and self._last_fragment_end == 0:
            # Opened ahead of a first frame that never came (stopped or paused first): it holds
            # no media at all, so it is not a segment. (Once fragments.jsonl records a fragment of
            # it, e.g. audio written before the first video frame, the file is evidence and stays.)
            w.abandon()
            w.path.unlink(missing_ok=True)
            # Its number is free again: the next segment takes it, so the numbering has no gap
            # for verify to report as a missing segment.
            self.segment_no -= 1
            self._send(SegmentDiscarded(self.spec.name, w.rel))
            return
        try:
            result = w.close()
        except OSError as exc:
            result = w.abandon()
            self._event("error", message=f"segment {w.rel} could not be finalised: {exc}", file=w.rel)
        self.closed_bytes += result.size
        self._report_closed(result, stage)
        del w, result
        give_back_free_memory()

    def cut_at_last_fragment(self, stage: int) -> None:
        """The disk is full (or failing): leave the open segment ending on its last complete
        fragment, so it plays without repair; the cut bytes are kept in recovered/ if they fit."""
        w, self.writer = self.writer, None
        if w is None:
            return
        result = w.abandon()
        keep = self._last_fragment_end
        if 0 < keep < result.path.stat().st_size:
            cut = cut_tail(self.session_dir, result.path, keep, space_first=True)
            if cut.error is not None:
                self._event("error", message=f"{cut.cut_bytes} bytes of an incomplete fragment of {cut.file} could "
                                             f"not be kept ({cut.error})", file=cut.file)
            result.size = keep
        self._report_closed(result, stage)

    def _report_closed(self, result: SegmentResult, stage: int) -> None:
        # Hashing a whole segment takes a while: off the frame path, in the background worker.
        def work() -> None:
            digest = sha256_file(result.path) if result.closed else None
            self._send(SegmentClosed(
                stream=self.spec.name, file=result.file, stage=stage, sha256=digest, size=result.size,
                frames=result.frames, dropped=result.dropped, first_pts_s=result.first_pts_s,
                last_pts_s=result.last_pts_s, audio_first_pts_s=result.audio_first_pts_s,
                audio_last_pts_s=result.audio_last_pts_s, fragments=result.fragments, closed=result.closed))
        self._background.submit(work)

    # fragment log ----------------------------------------------------------------------------
    def newest_fragment(self) -> FragmentWritten | None:
        """The newest fragment logged since the last call, if any."""
        newest, self._newest_fragment = self._newest_fragment, None
        return None if newest is None else FragmentWritten(self.spec.name, *newest)

    def _on_fragment(self, rec: FragmentRecord) -> None:
        self._last_fragment_end = rec.end
        w, rel = self.writer, self._rel  # the last fragment is written while its segment closes
        entry = {"file": rel, "kind": rec.kind, "index": rec.index, "offset": rec.offset,
                 "end": rec.end, "sha256": rec.sha256}
        if rec.skip:
            entry["skip"] = list(rec.skip)
        if w is not None and w.last_pts_s is not None:
            entry["last_pts_s"] = round(w.last_pts_s, 6)
        assert self.fraglog is not None
        # Reported with the stats (twice a second), not once a fragment: a message per fragment
        # would cost every stream a pipe write and the controller a wake-up eight times a second.
        self._newest_fragment = (rel, rec.index, rec.end, rec.sha256, self.fraglog.append(entry))

    def _on_sync(self) -> None:
        if self.fraglog is not None:
            self.fraglog.sync()
