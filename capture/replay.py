"""Replay sources: a generated test pattern, a looping clip, a looping WAV file.

They play through the same interface as real devices, paced on the session clock (or as fast
as possible for benchmarks), so tests, demos and benchmarks run the real pipeline with no
device attached. Video replay frames carry a timecode strip (capture/timecode.py).
"""
from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import wave
from pathlib import Path

import cv2
import numpy as np

from core.clock import NS_PER_S

from capture.base import AudioBlock, AudioSource, Frame, SourceInfo, SourceUnavailable, VideoSource
from capture.pacing import Pacer
from capture.timecode import draw_timecode

log = logging.getLogger(__name__)

# Fresh-looking sensor noise without generating it per frame: each frame takes a window of one
# noise field at another offset. Steps beyond the encoder's motion search (x264 ultrafast looks 16
# pixels around), so the noise costs the encoder what a camera's does; one field, not a plane per
# frame, so a 1080p replay source holds 7 MB of noise rather than 31.
NOISE_MARGIN = 64
NOISE_STEP = (37, 23)  # rows, columns moved per frame (mod NOISE_MARGIN)
SCROLL_PX_PER_FRAME = 3
PICTURES_SEED = 20261129  # every stream of a size scrolls the same canvas; its name, box and timecode differ


PICTURES_VERSION = 1  # bump when the drawing below changes: the cached files are then made anew


def pictures_folder() -> Path:
    """Where the pattern's pictures are kept for every stream process of this user: the user's
    cache folder (on disk: the page cache holds them, as it holds the file ffmpeg reads in the
    bench), else a private folder in the temporary folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates = [Path(cache) / "examrec" / "replay", Path(tempfile.gettempdir()) / f"examrec-replay-{os.getuid()}"]
    for folder in candidates:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = folder.stat()
        except OSError:
            continue  # (a service user without a home folder)
        if st.st_uid == os.getuid() and not st.st_mode & 0o022 and os.access(folder, os.W_OK):
            return folder
    raise SourceUnavailable(f"pattern: no private folder for the test pattern's pictures ({candidates[0]} or "
                            f"{candidates[1]}): make one of them writable by this user only")


def shared_pictures(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The pattern's canvas (twice the frame's width, wrapping) and noise field for one size,
    mapped read-only from a file every pattern source of that size maps: like the file the
    camera-less ffmpeg bench reads, the pictures are in memory once, not once per stream."""
    folder = pictures_folder()
    path = folder / f"pattern-v{PICTURES_VERSION}-{width}x{height}"
    shapes = {"canvas": (height, 2 * width, 3), "noise": (height + NOISE_MARGIN, width + NOISE_MARGIN, 3)}
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process draws them; the others wait and map them
        arrays = _map_pictures(path, shapes)
        if arrays is None:
            canvas, noise = _draw_pictures(width, height)
            for name, array in (("canvas", canvas), ("noise", noise)):
                tmp = path.with_name(f"{path.stem}.{name}.npy.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, array, allow_pickle=False)
                os.replace(tmp, path.with_name(f"{path.stem}.{name}.npy"))
            arrays = _map_pictures(path, shapes)
            assert arrays is not None
    return arrays


def _map_pictures(path: Path, shapes: dict[str, tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        canvas, noise = (np.load(path.with_name(f"{path.stem}.{name}.npy"), mmap_mode="r", allow_pickle=False)
                         for name in ("canvas", "noise"))
    except (OSError, ValueError):
        return None  # not made yet, or damaged: drawn again
    if canvas.shape != shapes["canvas"] or noise.shape != shapes["noise"] or canvas.dtype != np.uint8:
        return None
    return canvas, noise


def _draw_pictures(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(PICTURES_SEED)
    canvas = np.zeros((h, 2 * w, 3), np.uint8)
    xs = np.linspace(0, 255, 2 * w, dtype=np.float32)
    ys = np.linspace(40, 200, h, dtype=np.float32)[:, None]
    canvas[..., 0] = (xs[None, :] * 0.5 + ys * 0.3).astype(np.uint8)
    canvas[..., 1] = (ys * 0.8 + 20).astype(np.uint8).repeat(2 * w, axis=1)
    canvas[..., 2] = (255 - xs[None, :] * 0.6).astype(np.uint8).repeat(h, axis=0)
    for _ in range(40):  # shapes give edges and texture
        x, y = int(rng.integers(0, 2 * w)), int(rng.integers(0, h))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        size = int(rng.integers(h // 20, h // 5))
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (x, y), (x + size, y + size // 2), color, -1)
        else:
            cv2.circle(canvas, (x, y), size // 2, color, -1)
    # Make the canvas wrap seamlessly: the right half repeats the left.
    canvas[:, w:] = canvas[:, :w]
    noise = rng.integers(0, 10, (h + NOISE_MARGIN, w + NOISE_MARGIN, 3), dtype=np.uint8)
    return canvas, noise


def name_patch(name: str, width: int, height: int) -> tuple[tuple[int, int], np.ndarray]:
    """The stream's name in large white letters on black, drawn once, and where it goes in the
    frame (centred, above the middle). Drawing it into every frame with putText cost about as
    much as the rest of the picture; the letters do not move, so each frame takes the patch."""
    scale = height / 180
    thick = max(2, int(scale * 2))
    (tw, th), base = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = (width - tw) // 2, height // 2 - th  # the text's origin (its baseline's left end)
    x0, y0 = max(0, x - thick), max(0, y - th - thick)
    x1, y1 = min(width, x + tw + thick), min(height, y + base + thick)
    patch = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    cv2.putText(patch, name, (x - x0, y - y0), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return (x0, y0), patch


def _require_clock(source) -> None:
    if source.clock is None:
        raise RuntimeError(f"{source.name}: read() before start(clock)")


class PatternSource(VideoSource):
    """A moving, camera-like test pattern with the stream name in large letters.

    The background scrolls, a box moves and light noise changes every frame, so the encoder
    does the kind of work a real camera gives it.
    """

    def __init__(self, name: str, width: int, height: int, fps: float, realtime: bool = True):
        super().__init__(name, width, height, fps)
        self.realtime = realtime
        self._canvas: np.ndarray | None = None
        self._noise: np.ndarray | None = None
        self._name_patch: tuple[tuple[int, int], np.ndarray] | None = None
        self._pacer: Pacer | None = None

    def open(self) -> None:
        self._canvas, self._noise = shared_pictures(self.width, self.height)
        self._name_patch = name_patch(self.name, self.width, self.height)

    def start(self, clock) -> None:
        super().start(clock)
        self._pacer = Pacer(clock.start_ns, self.fps, self.realtime)
        self._render(0, 0)  # the first drawing calls are slow (~50 ms): pay for them before the start

    @property
    def skipped(self) -> int:
        return self._pacer.skipped if self._pacer else 0

    def read(self) -> Frame:
        _require_clock(self)
        assert self._canvas is not None and self._pacer is not None, "open() first"
        due = self._pacer.next()
        img = self._render(self._pacer.index - 1, (due - self.clock.start_ns) // 1_000_000)
        return Frame(image=img, capture_ns=due)

    def _render(self, k: int, timecode_ms: int) -> np.ndarray:
        w, h = self.width, self.height
        x = (k * SCROLL_PX_PER_FRAME) % w
        assert self._canvas is not None and self._noise is not None and self._name_patch is not None
        dy, dx = (k * NOISE_STEP[0]) % NOISE_MARGIN, (k * NOISE_STEP[1]) % NOISE_MARGIN
        img = cv2.add(self._canvas[:, x:x + w], self._noise[dy:dy + h, dx:dx + w])
        bx = int((w - h // 4) * (0.5 + 0.5 * np.sin(k / 20)))
        cv2.rectangle(img, (bx, h // 2), (bx + h // 4, h // 2 + h // 4), (30, 220, 250), -1)
        (x0, y0), patch = self._name_patch
        roi = img[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]]
        cv2.max(roi, patch, dst=roi)  # white letters over whatever is behind them
        draw_timecode(img, timecode_ms)
        return img

    def close(self) -> None:
        self._canvas = None
        self._noise = None

    def info(self) -> SourceInfo:
        return SourceInfo(kind="pattern", device="pattern:", details={"realtime": self.realtime})


class ClipSource(VideoSource):
    """Loops a video file, scaled to the stream's size, paced at the stream's rate."""

    def __init__(self, name: str, width: int, height: int, fps: float, path: Path, realtime: bool = True):
        super().__init__(name, width, height, fps)
        self.path = Path(path)
        self.realtime = realtime
        self._container = None
        self._frames = None
        self._pacer: Pacer | None = None

    def _reopen(self) -> None:
        import av
        if self._container is not None:
            self._container.close()
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise SourceUnavailable(f"camera {self.name}: clip {self.path} cannot be read: {exc}") from None
        self._frames = self._container.decode(video=0)

    def open(self) -> None:
        self._reopen()

    def start(self, clock) -> None:
        super().start(clock)
        self._pacer = Pacer(clock.start_ns, self.fps, self.realtime)

    @property
    def skipped(self) -> int:
        return self._pacer.skipped if self._pacer else 0

    def _next_picture(self) -> np.ndarray:
        for _ in range(2):
            try:
                frame = next(self._frames)
                img = frame.to_ndarray(format="bgr24")
                if img.shape[1] != self.width or img.shape[0] != self.height:
                    img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
                return img
            except StopIteration:
                self._reopen()  # loop the clip
        raise SourceUnavailable(f"camera {self.name}: clip {self.path} has no video frames")

    def read(self) -> Frame:
        _require_clock(self)
        assert self._pacer is not None
        due = self._pacer.next()
        img = self._next_picture()
        draw_timecode(img, (due - self.clock.start_ns) // 1_000_000)
        return Frame(image=img, capture_ns=due)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def info(self) -> SourceInfo:
        return SourceInfo(kind="clip", device=str(self.path))


class WavSource(AudioSource):
    """Loops a 48 kHz 16-bit WAV file in blocks, each stamped with its first sample's instant.

    A block is handed out when its last sample is due, as a sound card would deliver it.
    """

    BLOCK = 1024

    def __init__(self, path: Path, realtime: bool = True):
        super().__init__()
        self.path = Path(path)
        self.realtime = realtime
        self._samples: np.ndarray | None = None
        self._pos = 0
        self._pacer: Pacer | None = None

    def open(self) -> None:
        try:
            with wave.open(str(self.path), "rb") as w:
                if w.getsampwidth() != 2 or w.getframerate() != self.sample_rate:
                    raise SourceUnavailable(
                        f"audio {self.path}: {w.getframerate()} Hz, {8 * w.getsampwidth()}-bit; "
                        f"replay needs {self.sample_rate} Hz 16-bit PCM (convert it with ffmpeg -ar 48000 -c:a pcm_s16le)")
                data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
                channels = w.getnchannels()
        except (wave.Error, EOFError, OSError) as exc:
            raise SourceUnavailable(f"audio {self.path}: not a readable WAV file ({exc})") from None
        data = data.reshape(-1, channels)
        mono = data.mean(axis=1).astype(np.int16) if channels > 1 else data[:, 0].copy()
        if len(mono) < self.BLOCK:
            raise SourceUnavailable(f"audio {self.path}: shorter than one block ({self.BLOCK} samples)")
        self._samples = mono

    def start(self, clock) -> None:
        super().start(clock)
        # Slot k ends block k-1; slot 0 is the session start, so the first block is due one block later.
        # A sound card buffers: a late reader gets the blocks it missed, back to back, never a gap.
        self._pacer = Pacer(clock.start_ns, self.sample_rate / self.BLOCK, self.realtime, skip_late=False)
        self._pos = 0  # sample 0 of the file is the (check or session) clock's start
        self._pacer.index = 1

    def read(self) -> AudioBlock:
        assert self._samples is not None and self._pacer is not None, "open() and start() first"
        end_due = self._pacer.next()
        first_ns = end_due - round(self.BLOCK * NS_PER_S / self.sample_rate)
        n = len(self._samples)
        idx = (np.arange(self.BLOCK) + self._pos) % n
        self._pos = (self._pos + self.BLOCK) % n
        return AudioBlock(samples=self._samples[idx].reshape(-1, 1), capture_ns=first_ns, sample_rate=self.sample_rate)

    def close(self) -> None:
        self._samples = None

    def info(self) -> SourceInfo:
        return SourceInfo(kind="wav", device=str(self.path))
