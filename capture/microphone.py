"""The microphone, through PortAudio (sounddevice): 48 kHz, mono, int16, in 20 ms blocks.

Time stamps: PortAudio's callback says when the block's first sample reached the ADC
(``inputBufferAdcTime``) on PortAudio's own clock (the wall clock on Linux). The offset between
that clock and CLOCK_MONOTONIC is measured outside the callback (``stream.time`` bracketed by two
``time.monotonic_ns()`` reads, the tightest of a few tries, again every second so a slewing
wall clock is followed), because inside a Python callback the time spent waiting for the GIL
would be counted as latency. Each block is so stamped on CLOCK_MONOTONIC from the sound card's
own account, never by counting samples from the start (a sound card's clock drifts against the
system's, and an overflow loses samples). :class:`BlockClock` smooths the jitter of those
measurements while blocks are contiguous and starts over at a gap. An ADC time is believed only
when it is plausible: not after the block reached us, and not older than the stream's buffering
allows (PortAudio's estimate through ALSA's PulseAudio plugin was seen 0.6 s off); an
implausible block simply follows the previous one.

The first input stream a process opens through PortAudio's ALSA/PulseAudio path delivers its
first block late and loses the samples before it (measured: 0.6-1.6 s); later streams do not.
:meth:`MicrophoneSource.open` therefore opens and discards a warm-up stream once per device.

:class:`LevelMeter` keeps the RMS level of the last second for checks and status;
:func:`check_microphone` is the pre-exam check: a silent microphone fails it.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from capture.base import AudioBlock, AudioSource, SourceInfo, SourceLost, SourceUnavailable

if TYPE_CHECKING:
    from core.profile import Profile

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
CHANNELS = 1
BLOCK_FRAMES = 960              # 20 ms: small enough for lip sync, large enough for a busy machine
BLOCK_NS = BLOCK_FRAMES * 1_000_000_000 // SAMPLE_RATE
QUEUE_BLOCKS = 250              # 5 s of sound may wait for a slow consumer before the oldest is dropped
DEFAULT_STALL_TIMEOUT_S = 2.0
WARMUP_TIMEOUT_S = 4.0
OFFSET_REFRESH_NS = 1_000_000_000   # re-measure PortAudio's clock against CLOCK_MONOTONIC this often
OFFSET_MAX_UNCERTAINTY_NS = 200_000  # a clock offset measured with a wider bracket is not taken
MAX_EXTRA_DELAY_NS = 60_000_000    # ADC times older than latency + 2 blocks + this are not believed
JITTER_NS = 25_000_000          # measurements closer than this to the contiguous time are jitter
SILENCE_DBFS = -70.0            # below this over a second the microphone counts as silent

_warm_lock = threading.Lock()
_warmed: set[tuple[int, str]] = set()   # (PortAudio generation, device name) already warmed up
_pa_generation = 0
# PortAudio's device list is a snapshot from its initialisation (which may predate the sound
# server, or a microphone plugged in since): re-scan before the first open of the process and
# after a loss, but never while one of our streams runs (re-scanning would break it).
_rescan_wanted = True
_open_streams = 0


def _sounddevice():
    try:
        import sounddevice as sd
    except OSError as exc:  # the Python package is there but the C library is not
        raise SourceUnavailable(f"microphone: PortAudio is not installed ({exc}): apt-get install libportaudio2") from None
    return sd


def _refresh_portaudio(sd) -> bool:
    """Re-scan the sound devices: PortAudio lists only what was there at its initialisation,
    so a microphone plugged in (or back in) later appears only after this. Skipped (False)
    while a stream of this process is open."""
    global _pa_generation, _rescan_wanted
    with _warm_lock:
        if _open_streams:
            return False
        sd._terminate()
        sd._initialize()
        _pa_generation += 1
        _rescan_wanted = False
    return True


def input_devices() -> list[dict[str, Any]]:
    """Every PortAudio input: index, name, host API, channels, default rate, default flag."""
    sd = _sounddevice()
    try:
        default_in = sd.query_devices(kind="input")["index"]   # PortAudio's default input
    except Exception:  # no default input at all
        default_in = -1
    hostapis = sd.query_hostapis()
    out = []
    for d in sd.query_devices():
        if d["max_input_channels"] > 0:
            out.append({"index": d["index"], "name": d["name"], "hostapi": hostapis[d["hostapi"]]["name"],
                        "channels": d["max_input_channels"], "default_samplerate": d["default_samplerate"],
                        "default": d["index"] == default_in})
    return out


def find_input_device(name: str, refresh: bool = True) -> dict[str, Any]:
    """The input a profile names: "default", an exact name, or a unique-enough substring
    (case-insensitive; the first match wins, with a warning naming the others)."""
    sd = _sounddevice()
    if refresh and _rescan_wanted:
        _refresh_portaudio(sd)
    for attempt in range(2):
        inputs = input_devices()
        if name.strip().lower() == "default":
            match = [d for d in inputs if d["default"]] or inputs[:1]
        else:
            key = name.casefold()
            match = [d for d in inputs if d["name"].casefold() == key] or \
                    [d for d in inputs if key in d["name"].casefold()]
        if match:
            if len(match) > 1:
                log.warning("microphone %r matches %s; using %r", name, [d["name"] for d in match], match[0]["name"])
            return match[0]
        if attempt == 0 and refresh:
            _refresh_portaudio(sd)
    listed = ", ".join(repr(d["name"]) for d in inputs) or "none"
    raise SourceUnavailable(f"microphone {name!r} not found: is it plugged in? Sound inputs now: {listed}. "
                            f"`examrec devices` lists what is connected")


def measure_clock_offset(clock_s: Callable[[], float], tries: int = 5) -> tuple[int, int]:
    """``clock_s()`` (seconds, e.g. PortAudio's stream time) minus CLOCK_MONOTONIC, in ns, from
    the try whose two monotonic reads lie closest together; and that distance (the uncertainty)."""
    best: tuple[int, int] | None = None
    for _ in range(tries):
        m1 = time.monotonic_ns()
        t = clock_s()
        m2 = time.monotonic_ns()
        if best is None or m2 - m1 < best[0]:
            best = (m2 - m1, round(t * 1e9) - (m1 + m2) // 2)
    return best[1], best[0]


class BlockClock:
    """Stamps contiguous blocks from their measured start times, keeping the timeline sane.

    * A measurement within ``JITTER_NS`` of where the previous block ended moves the stamp 1/8
      of the way towards it: the sound card's drift is followed within milliseconds, the
      jitter of the estimates does not shake the timeline.
    * A measurement later than that is a gap (samples lost: an overflow, a restarted stream):
      the measurement is taken as it is. An overflow the sound system reports is always a gap.
    * A measurement earlier than that would make this block overlap the previous one, which a
      contiguous stream cannot do: the anchor is corrected towards it by at most 2 ms a block.
    * No credible measurement (``None``): the block follows the previous one; the very first
      block takes ``fallback`` (when it reached us).
    """

    MAX_BACK_NS = 2_000_000

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        self.sample_rate = sample_rate
        self._next: int | None = None
        self.gaps = 0

    def stamp(self, measured_ns: int | None, frames: int, fallback_ns: int | None = None, gap: bool = False) -> int:
        """The stamp of a block of ``frames`` whose first sample was measured at ``measured_ns``."""
        if self._next is None:
            stamp = measured_ns if measured_ns is not None else fallback_ns
            if stamp is None:
                raise ValueError("the first block needs a measurement or a fallback")
        elif measured_ns is None:
            if gap and fallback_ns is not None and fallback_ns > self._next:
                self.gaps += 1
                stamp = fallback_ns
            else:
                stamp = self._next
        elif gap or measured_ns - self._next > JITTER_NS:
            self.gaps += 1
            stamp = max(measured_ns, self._next)
        elif self._next - measured_ns > JITTER_NS:
            stamp = self._next - min((self._next - measured_ns) // 8, self.MAX_BACK_NS)
        else:
            stamp = self._next + (measured_ns - self._next) // 8
        self._next = stamp + frames * 1_000_000_000 // self.sample_rate
        return stamp


class LevelMeter:
    """RMS level of the last ``window_s`` seconds, in dBFS (full-scale square wave = 0 dBFS,
    full-scale sine = -3 dBFS, digital silence = -inf)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, window_s: float = 1.0):
        self.window = int(sample_rate * window_s)
        self._blocks: deque[tuple[int, float]] = deque()
        self._n = 0
        self._sumsq = 0.0
        self._lock = threading.Lock()

    def add(self, samples: np.ndarray) -> None:
        x = samples.astype(np.float64).ravel() / 32768.0
        entry = (x.size, float(np.dot(x, x)))
        with self._lock:
            self._blocks.append(entry)
            self._n += entry[0]
            self._sumsq += entry[1]
            while self._blocks and self._n - self._blocks[0][0] >= self.window:
                n, s = self._blocks.popleft()
                self._n -= n
                self._sumsq -= s

    def dbfs(self) -> float:
        with self._lock:
            if self._n == 0 or self._sumsq <= 0:
                return -math.inf
            return 10 * math.log10(self._sumsq / self._n)

    @property
    def seconds(self) -> float:
        return self._n / SAMPLE_RATE


class MicrophoneSource(AudioSource):
    """A sound input named by (part of) its PortAudio name, or "default"."""

    sample_rate = SAMPLE_RATE
    channels = CHANNELS

    def __init__(self, device_name: str, profile: "Profile | None" = None, *, stall_timeout_s: float | None = None,
                 warm_up: bool = True):
        super().__init__()
        self.device_name = device_name.strip() or "default"
        self.stall_timeout_s = stall_timeout_s or DEFAULT_STALL_TIMEOUT_S
        self.warm_up = warm_up
        self.meter = LevelMeter()
        self.device: dict[str, Any] | None = None
        self._stream = None
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BLOCKS)
        self._clock = BlockClock()
        self.blocks_read = 0
        self.dropped_blocks = 0
        self.overflows = 0
        self._error: str | None = None
        self._pa_offset_ns: int | None = None
        self._offset_measured_ns = 0
        self._max_delay_ns = 0
        self.implausible = 0

    @property
    def label(self) -> str:
        shown = self.device["name"] if self.device else self.device_name
        return f"microphone {self.device_name!r}" + (f" ({shown})" if shown != self.device_name else "")

    def open(self) -> None:
        """Find the input, check it can record 48 kHz mono 16-bit, warm up, start the stream."""
        self.close()
        sd = _sounddevice()
        self.device = find_input_device(self.device_name)
        index = self.device["index"]
        try:
            sd.check_input_settings(device=index, samplerate=SAMPLE_RATE, channels=CHANNELS, dtype="int16")
        except Exception as exc:
            raise SourceUnavailable(
                f"{self.label} cannot record {SAMPLE_RATE} Hz mono 16-bit ({exc}); it offers "
                f"{self.device['channels']} channel(s) at {self.device['default_samplerate']:g} Hz by default") from None
        if self.warm_up:
            self._warm_up(sd, index)
        self._queue = queue.Queue(maxsize=QUEUE_BLOCKS)
        self._clock = BlockClock()
        self._error = None
        global _open_streams
        try:
            stream = sd.InputStream(device=index, samplerate=SAMPLE_RATE, channels=CHANNELS, dtype="int16",
                                    blocksize=BLOCK_FRAMES, callback=self._callback,
                                    finished_callback=self._finished)
            # Measured before start so the first block is stamped with it; a host API whose
            # stream has no time before it runs (0) is measured right after start instead.
            running_first = stream.time == 0
            if not running_first:
                self._pa_offset_ns = measure_clock_offset(lambda: stream.time, tries=20)[0]
            # How much older than its arrival a block's first sample can credibly be: the
            # stream's input latency, two blocks, and room for a busy machine.
            self._max_delay_ns = round(stream.latency * 1e9) + 2 * BLOCK_NS + MAX_EXTRA_DELAY_NS
            stream.start()
            if running_first:
                self._pa_offset_ns = measure_clock_offset(lambda: stream.time, tries=20)[0]
            self._offset_measured_ns = time.monotonic_ns()
        except Exception as exc:
            raise SourceUnavailable(f"{self.label} cannot be opened: {exc}") from None
        with _warm_lock:
            _open_streams += 1
        self._stream = stream
        # "Opened" means sound flows: wait for the first block, so a device that opens but
        # delivers nothing is reported now, as unavailable, not later as lost.
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        while self._queue.empty():
            if time.monotonic() > deadline:
                self.close()
                self._forget_warm_up()
                raise SourceUnavailable(f"{self.label} delivers no sound (nothing within {WARMUP_TIMEOUT_S:g} s)")
            time.sleep(0.01)

    def _forget_warm_up(self) -> None:
        """After a loss the device (or the sound server) may be new: re-scan and warm up again."""
        global _rescan_wanted
        with _warm_lock:
            _warmed.discard((_pa_generation, self.device["name"] if self.device else ""))
            _rescan_wanted = True

    def _warm_up(self, sd, index: int) -> None:
        key = (_pa_generation, self.device["name"])
        with _warm_lock:
            if key in _warmed:
                return
            got = threading.Event()
            try:
                with sd.InputStream(device=index, samplerate=SAMPLE_RATE, channels=CHANNELS, dtype="int16",
                                    blocksize=BLOCK_FRAMES, callback=lambda *a: got.set()):
                    if not got.wait(WARMUP_TIMEOUT_S):
                        raise SourceUnavailable(f"{self.label} delivers no sound (nothing within {WARMUP_TIMEOUT_S:g} s)")
            except SourceUnavailable:
                raise
            except Exception as exc:
                raise SourceUnavailable(f"{self.label} cannot be opened: {exc}") from None
            _warmed.add(key)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now = time.monotonic_ns()
        # The block's first sample was recorded before the whole block reached us: an upper bound.
        arrived_start = now - frames * 1_000_000_000 // SAMPLE_RATE
        adc, offset = time_info.inputBufferAdcTime, self._pa_offset_ns
        measured = None
        if adc > 0 and offset is not None:
            at = round(adc * 1e9) - offset
            # Credible: not after the upper bound, and not older than the stream's buffering
            # allows. PortAudio's estimate through ALSA's PulseAudio plugin was seen claiming
            # samples 0.6 s older than they were; such a block follows the previous one instead.
            if -JITTER_NS <= arrived_start - at <= self._max_delay_ns:
                measured = min(at, arrived_start)
            else:
                self.implausible += 1
        overflow = bool(status and status.input_overflow)
        if overflow:
            self.overflows += 1
        samples = indata.copy()
        self.meter.add(samples)
        item = (samples, self._clock.stamp(measured, frames, fallback_ns=arrived_start, gap=overflow))
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            # The consumer is far behind: lose the oldest sound, keep the newest, count it.
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self.dropped_blocks += 1
            self._queue.put_nowait(item)

    def _finished(self) -> None:
        self._error = "the sound stream ended"

    def read(self) -> AudioBlock:
        if self._stream is None:
            raise SourceLost(f"{self.label}: not open")
        try:
            samples, stamp = self._queue.get(timeout=self.stall_timeout_s)
        except queue.Empty:
            why = self._error or "unplugged, or the sound system stopped"
            self._forget_warm_up()
            raise SourceLost(f"{self.label}: no sound for {self.stall_timeout_s:g} s ({why})") from None
        self.blocks_read += 1
        if time.monotonic_ns() - self._offset_measured_ns > OFFSET_REFRESH_NS:
            stream = self._stream
            offset, uncertainty = measure_clock_offset(lambda: stream.time)
            # On a busy machine a measurement can straddle a thread switch: keep the previous
            # offset rather than take a blurred one (the clocks move apart by ppm, not ms).
            if uncertainty < OFFSET_MAX_UNCERTAINTY_NS:
                self._pa_offset_ns = offset
                self._offset_measured_ns = time.monotonic_ns()
        return AudioBlock(samples=samples, capture_ns=stamp, sample_rate=SAMPLE_RATE)

    def level_dbfs(self) -> float:
        """RMS level of the last second of sound captured (for the status line)."""
        return self.meter.dbfs()

    def close(self) -> None:
        global _open_streams
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception:  # a vanished device may fail to close; it is gone either way
                pass
            with _warm_lock:
                _open_streams -= 1

    def info(self) -> SourceInfo:
        return SourceInfo(kind="microphone", device=self.device["name"] if self.device else self.device_name, details={
            "level_dbfs": self.level_dbfs(), "blocks": self.blocks_read, "dropped_blocks": self.dropped_blocks,
            "overflows": self.overflows, "gaps": self._clock.gaps, "implausible_adc_times": self.implausible})


@dataclass
class MicCheck:
    """Result of :func:`check_microphone`: ``ok`` False means the check failed; ``message`` says why."""

    ok: bool
    device: str
    level_dbfs: float
    message: str


def check_microphone(device_name: str = "default", seconds: float = 1.0, silence_dbfs: float = SILENCE_DBFS,
                     source: MicrophoneSource | None = None) -> MicCheck:
    """Record ``seconds`` of sound and judge it: a missing or silent microphone fails.

    Pass an already open ``source`` to measure without reopening it (its blocks are consumed).
    """
    own = source is None
    src = source or MicrophoneSource(device_name)
    try:
        if own:
            src.open()
        meter = LevelMeter(window_s=seconds)
        got = 0
        deadline = time.monotonic() + seconds + src.stall_timeout_s
        while got < seconds * SAMPLE_RATE and time.monotonic() < deadline:
            block = src.read()
            meter.add(block.samples)
            got += len(block.samples)
    except (SourceUnavailable, SourceLost) as exc:
        return MicCheck(False, device_name, -math.inf, str(exc))
    finally:
        if own:
            src.close()
    level = meter.dbfs()
    shown = f"{level:.1f} dBFS" if level > -math.inf else "digital silence"
    if level < silence_dbfs:
        return MicCheck(False, device_name, level,
                        f"{src.label} is silent ({shown} over {seconds:g} s, need above {silence_dbfs:g}): "
                        f"is it muted, unplugged or covered? Speak and check again")
    return MicCheck(True, device_name, level, f"{src.label}: level {shown}")
