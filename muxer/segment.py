"""One MP4 segment of one stream: H.264 (and AAC for the stream that owns the audio) muxed into
crash-safe fragmented MP4 through :class:`FragmentFile`.

Every segment starts a fresh encoder, so it starts on a keyframe and stands alone. Timestamps
are the session timeline: PTS = capture time - session start, in every segment.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np

from core.clock import NS_PER_S, SessionClock
from core.profile import EncoderSpec

from muxer.fragment_file import FragmentFile, FragmentRecord
from muxer.fragment_flush import FragmentFlush

log = logging.getLogger(__name__)

VIDEO_TB = Fraction(1, 90000)
AUDIO_RATE = 48000
AUDIO_TB = Fraction(1, AUDIO_RATE)


@dataclass
class SegmentSettings:
    width: int
    height: int
    fps: float
    encoder: EncoderSpec
    gop: int
    fragment_ms: int = 120
    fsync_interval_ms: int = 500
    audio: bool = False
    # The longest a kill may cost: from the last frame kept to the kill (REQUIREMENTS: 0.25 s).
    # Fragments are made short enough for it at the stream's rate (fragment_length_ms).
    kill_bound_ms: int = 250
    # A backstop for a stream whose next frame is late (a stall, a starved process): end the open
    # fragment before its oldest frame would break the kill bound (muxer/fragment_flush.py).
    flush_due_fragments: bool = True


# Time a frame needs from capture to the file besides the fragment it waits in (overlay, colour
# conversion, encode, write): measured 0.01-0.03 s for the profiles' sizes on this machine.
PROCESSING_MARGIN_MS = 40
# How far a camera's frame may come early without a fragment taking one more frame than meant.
JITTER_SHARE = 0.5


def fragment_length_ms(settings: SegmentSettings) -> int:
    """The muxer's fragment length for this stream: ``fragment_ms`` unless the stream is so slow
    that a fragment of that length would let a kill cost more than ``kill_bound_ms``.

    The muxer ends a fragment when a packet arrives that would make it at least this long, so a
    fragment of n frames keeps its first frame waiting n frame intervals (plus processing), and a
    kill then loses that wait plus the interval before it. So n is the most frames for which
    (n + 1) intervals and the processing margin stay within the bound, at least one; the length
    asked of the muxer is n intervals less half of one, so a frame that comes a little early does
    not make it wait for one more. At 25 and 30 fps that is the profile's 120 ms; at 15 fps two
    frames; at 10 fps every frame is its own fragment."""
    interval_ms = 1000.0 / settings.fps
    frames = max(1, int((settings.kill_bound_ms - PROCESSING_MARGIN_MS) // interval_ms) - 1)
    return max(1, min(settings.fragment_ms, round(frames * interval_ms - JITTER_SHARE * interval_ms)))


def backstop_ms(settings: SegmentSettings) -> int:
    """How old a fragment's oldest frame may get before the fragment is ended without waiting for
    the next frame: what the kill bound leaves after one frame interval, less a wake-up's margin.
    Later than the muxer's own end in steady running, so it acts only when a frame is late (an
    early end must guess the last frame's length; see SegmentWriter.write_video)."""
    interval_ms = 1000.0 / settings.fps
    return max(fragment_length_ms(settings), round(settings.kill_bound_ms - interval_ms - 20))


@dataclass
class SegmentResult:
    file: str            # relative to the session folder
    path: Path
    size: int
    frames: int
    dropped: int
    first_pts_s: float | None
    last_pts_s: float | None
    audio_first_pts_s: float | None
    audio_last_pts_s: float | None
    fragments: int
    closed: bool


def container_options(fragment_ms: int, audio: bool) -> dict[str, str]:
    """Muxer options: hybrid fragmented MP4 (a regular MP4 once closed), fragments of at most
    ``fragment_ms`` of media, each written to the OS as soon as it is complete.

    Timestamps must stay absolute on the session timeline in every file, interrupted or closed:
    - empty_moov + frag_discont: every sample lives in a moof whose tfdt carries its absolute
      time (without frag_discont the muxer counts from 0; without empty_moov the first
      fragment is described by the initial moov, whose edit list hides it from players when the
      file is never closed);
    - avoid_negative_ts=disabled: don't shift a segment that starts at 300 s back to 0;
    - use_editlist=1: the moov written on close places the segment at its absolute start.
    """
    opts = {
        "movflags": "+hybrid_fragmented+empty_moov+default_base_moof+frag_discont",
        "frag_duration": str(fragment_ms * 1000),
        "flush_packets": "1",
        "avoid_negative_ts": "disabled",
        "use_editlist": "1",
    }
    if audio:
        # Don't let the interleaver hold video for long when audio lags or stops.
        opts["max_interleave_delta"] = str(fragment_ms * 1000)
    return opts



class AudioTimeline:
    """Sample-accurate audio PTS on the session timeline.

    Blocks are placed where their capture stamp says; consecutive blocks continue the sample
    count exactly (no jitter), and a real gap (a pause, a lost device) of more than 20 ms moves
    the count to the stamp, so audio never drifts from video.

    The AAC encoder's 1024 samples of pre-roll are accounted for by the muxer (in the fragments'
    timing and the closing edit list), so the stamp is the PTS: the tests check that the
    fixture's beeps decode at their capture instant, in closed and in interrupted files.
    """

    RESYNC_S = 0.020

    def __init__(self, clock: SessionClock):
        self.clock = clock
        self.next_pts: int | None = None

    def place(self, capture_ns: int, n: int) -> int:
        """PTS (1/48000 s) to give the encoder for a block of ``n`` samples."""
        stamped = round(self.clock.pts_s(capture_ns) * AUDIO_RATE)
        if self.next_pts is None or abs(stamped - self.next_pts) > self.RESYNC_S * AUDIO_RATE:
            pts = stamped if self.next_pts is None else max(stamped, self.next_pts)
        else:
            pts = self.next_pts
        self.next_pts = pts + n
        return pts


class SegmentWriter:
    """Writes one segment file; ``close()`` finalises it into a regular seekable MP4.

    What a kill can cost is how long a captured frame waits before its fragment is written. Two
    things made slow streams wait far longer than ``fragment_ms``: the encoder held one frame
    back (x264 without ``tune=zerolatency``), and the muxer ends a fragment only when a later
    packet arrives (a 10 fps frame waited for the two frames after it: 0.3 s). So the encoder
    holds nothing, a slow stream's fragments hold as few frames as the bound needs
    (:func:`fragment_length_ms`: one at 10 fps), and when a frame is late :meth:`flush_if_due`
    ends the open fragment before its oldest frame breaks the bound (:func:`backstop_ms`): the
    stream loop calls it whenever it wakes without a frame, and :meth:`wait_s` tells it how long
    it may sleep.
    """

    def __init__(self, path: Path, rel: str, settings: SegmentSettings, clock: SessionClock,
                 on_fragment: Callable[[FragmentRecord], None] | None = None,
                 on_sync: Callable[[], None] | None = None,
                 file_type: type[FragmentFile] = FragmentFile):
        self.path = Path(path)
        self.rel = rel
        self.settings = settings
        self.clock = clock
        self._user_on_fragment = on_fragment
        self.file = file_type(self.path, settings.fsync_interval_ms * 1_000_000, self._fragment_written, on_sync)
        self.fragment_ms = fragment_length_ms(settings)
        self.container = av.open(self.file, "w", format="mp4",
                                 options=container_options(self.fragment_ms, settings.audio))
        self._flusher = FragmentFlush(self.container)
        self.max_age_ns = backstop_ms(settings) * 1_000_000
        self.forced_fragments = 0       # fragments ended by flush_if_due (the rest by the muxer)
        self._open_since_ns: int | None = None  # capture time of the oldest sample not yet written
        self._written_marker = 0        # counts written fragments, to see a flush inside mux()
        self._last_video: tuple[int, int] | None = None   # pts and duration of the last video packet muxed
        # After an early fragment end: a video frame starting after this pts must be a keyframe
        # (see flush_if_due).
        self._keyframe_after_pts: int | None = None
        vs = self.container.add_stream("libx264", rate=Fraction(settings.fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = settings.width, settings.height, "yuv420p"
        vs.time_base = VIDEO_TB
        cc = vs.codec_context
        cc.time_base = VIDEO_TB
        cc.gop_size = settings.gop
        cc.thread_count = 1  # one thread per stream: the streams themselves use the cores
        # zerolatency: x264 returns each frame's packet at once (ultrafast alone held one frame
        # back; slower presets hold 4-11 for lookahead and B-frames): a held frame is a lost one.
        opts = {"preset": settings.encoder.preset, "tune": "zerolatency"}
        if settings.encoder.crf is not None:
            opts["crf"] = str(settings.encoder.crf)
        else:
            cc.bit_rate = settings.encoder.bitrate_kbps * 1000
        vs.options = opts
        self.video = vs
        self.audio = None
        if settings.audio:
            self.audio = self.container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
            self.audio.time_base = AUDIO_TB
        self.frames = 0
        self.dropped = 0
        self.first_pts_s: float | None = None
        self.last_pts_s: float | None = None
        self.audio_first_pts: int | None = None
        self.audio_end_pts: int | None = None
        self._last_vpts = -1
        self.closed = False

    def write_video(self, image: np.ndarray, capture_ns: int) -> None:
        """Encode one BGR frame captured at ``capture_ns`` and mux what the encoder gives back."""
        pts = round((capture_ns - self.clock.start_ns) * 90000 / NS_PER_S)
        if pts <= self._last_vpts:  # a stamp that doesn't advance can't be shown: keep order
            pts = self._last_vpts + 1
        self._last_vpts = pts
        i420 = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        # Wrap the fresh array instead of copying it into a new frame (1 ms a 1080p frame); each
        # frame gets its own array, so nothing the encoder still holds is overwritten.
        frame = av.VideoFrame.from_numpy_buffer(i420, format="yuv420p")
        frame.pts = pts
        frame.time_base = VIDEO_TB
        if self._keyframe_after_pts is not None:
            if pts > self._keyframe_after_pts:
                frame.pict_type = av.video.frame.PictureType.I
            self._keyframe_after_pts = None
        for packet in self.video.encode(frame):
            if not packet.duration:
                # A fragment ended before the next frame exists takes its last sample's length
                # from here. The muxer moves a next frame that starts before that guess ends
                # to where it ends, so guess short (half a frame), not the nominal interval: a
                # camera's jitter never shifts a frame. Where the next frame came before the
                # fragment ended, the muxer uses the true length instead.
                packet.duration = max(1, self._frame_ticks // 2)
            self._mux(packet)
        self.frames += 1
        pts_s = pts / 90000
        if self.first_pts_s is None:
            self.first_pts_s = pts_s
        self.last_pts_s = pts_s

    def write_audio(self, samples: np.ndarray, pts: int) -> None:
        """Encode int16 mono samples (n, 1) whose first sample is at ``pts`` (1/48000 s)."""
        if self.audio is None:
            return
        if pts < 0:  # a block that began before the session start: only its part after 0 counts
            samples = samples[-pts:]
            pts = 0
            if samples.shape[0] == 0:
                return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.reshape(1, -1)), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TB
        for packet in self.audio.encode(frame):
            self._mux(packet)
        if self.audio_first_pts is None:
            self.audio_first_pts = pts
        self.audio_end_pts = pts + samples.shape[0]

    # fragments ---------------------------------------------------------------------------
    @property
    def _frame_ticks(self) -> int:
        return max(1, round(90000 / self.settings.fps))

    def _fragment_written(self, record: FragmentRecord) -> None:
        if record.kind == "fragment":
            self._written_marker += 1
        if self._user_on_fragment is not None:
            self._user_on_fragment(record)

    def _mux(self, packet: av.Packet) -> None:
        """Mux one packet and keep track of the oldest sample not yet in a written fragment."""
        before = self._written_marker
        self.container.mux(packet)
        if packet.pts is None:
            return
        if packet.stream is self.video:
            self._last_video = (packet.pts, packet.duration or 0)
        sample_ns = self.clock.start_ns + round(float(packet.pts * packet.time_base) * NS_PER_S)
        if self._written_marker != before:
            # The muxer ended the fragment before this packet: the open one starts with it.
            self._open_since_ns = sample_ns
        elif self._open_since_ns is None or sample_ns < self._open_since_ns:
            self._open_since_ns = sample_ns

    @property
    def can_flush(self) -> bool:
        """Whether fragments can be ended on demand with this PyAV (see muxer.fragment_flush)."""
        return self._flusher.available

    def due_ns(self) -> int | None:
        """When the open fragment must be written (its oldest sample is then ``backstop_ms``
        old); None when everything muxed is written already, and always for a stream with sound:
        there the interleaver ends fragments (ending them early split the sound from its
        pictures across fragments, and Chromium then showed that camera two frames late)."""
        if (not self.settings.flush_due_fragments or self._open_since_ns is None or not self._flusher.available
                or self.closed or self.audio is not None):
            return None
        return self._open_since_ns + self.max_age_ns

    def wait_s(self, longest: float, now_ns: int | None = None) -> float:
        """How long the caller may wait for the next frame before :meth:`flush_if_due` is due."""
        due = self.due_ns()
        if due is None:
            return longest
        now = time.monotonic_ns() if now_ns is None else now_ns
        return min(longest, max(0.0, (due - now) / NS_PER_S))

    def flush_if_due(self, now_ns: int | None = None) -> bool:
        """Write the open fragment if its oldest sample is ``backstop_ms`` old (capture clock).
        Returns whether a fragment was ended. Raises OSError as writing does (disk full)."""
        due = self.due_ns()
        now = time.monotonic_ns() if now_ns is None else now_ns
        if due is None or now < due:
            return False
        before = self._written_marker
        try:
            self._flusher.flush()
        except OSError as exc:
            raise (self.file.error or exc) from None  # the file layer's own error (ENOSPC) says more
        self._open_since_ns = None
        if self._written_marker != before:
            self.forced_fragments += 1
            # The fragment's last frame got a guessed, short length. A browser's Media Source
            # treats a next frame more than two such lengths later as a discontinuity and drops
            # every frame from it up to the next keyframe (up to a GOP of the stream unseen after
            # a stall): so that frame is made a keyframe.
            if self._last_video is not None:
                pts, duration = self._last_video
                self._keyframe_after_pts = pts + 2 * duration
            return True
        return False

    def close(self) -> SegmentResult:
        """Flush the encoders and finalise the file (regular MP4 with a moov at the end)."""
        if not self.closed:
            self.closed = True
            try:
                for packet in self.video.encode(None):
                    self.container.mux(packet)
                if self.audio is not None:
                    for packet in self.audio.encode(None):
                        self.container.mux(packet)
                # Closing writes the last fragment (recorded like the others), then the regular
                # moov at the end and the 8-byte header rewrite near the start.
                self.container.close()
            finally:
                self.file.close()
                self._release()
        return self.result()

    def _release(self) -> None:
        """Break the one reference cycle (the file calls back into this writer, whose container
        holds the file), so a closed writer and its encoder (tens of MB at 1080p) are freed as
        soon as the caller lets go, not at the garbage collector's next full pass."""
        self.file.on_fragment = None

    def abandon(self) -> SegmentResult:
        """Stop writing without finalising (the disk is full or the muxer failed): the file
        stays a fragmented MP4 that plays up to its last complete fragment."""
        self.closed = True
        try:
            self.file.close()
        except OSError:
            pass
        self._release()
        return self.result(closed=False)

    def result(self, closed: bool | None = None) -> SegmentResult:
        return SegmentResult(
            file=self.rel, path=self.path, size=self.file.size, frames=self.frames, dropped=self.dropped,
            first_pts_s=self.first_pts_s, last_pts_s=self.last_pts_s,
            audio_first_pts_s=None if self.audio_first_pts is None else self.audio_first_pts / AUDIO_RATE,
            audio_last_pts_s=None if self.audio_end_pts is None else self.audio_end_pts / AUDIO_RATE,
            fragments=self.file.fragments, closed=self.closed if closed is None else closed,
        )
