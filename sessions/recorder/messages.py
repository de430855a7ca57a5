"""What the session controller and its stream processes say to each other.

Every message is a frozen dataclass: the controller puts commands on a stream's command queue,
and a stream process sends reports up its pipe; both cross the process boundary by pickling, so
fields hold only plain values (numbers, strings, tuples, dicts of plain values) and the session
clock. Each side handles a message with one ``match`` on its class (the stream process in
``sessions/recorder/stream/process.py``, the controller in ``controller.py``), so a new message
is a new class here and a new ``case`` there, never a string kind or a positional tuple.

Times are monotonic nanoseconds (``*_ns``, the capture clock) or seconds on the session timeline
(``*_pts_s``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from core.clock import SessionClock

# A pedal actuation on the capture clock: (start_ns, end_ns), end None while it is held.
PedalSpan = tuple[int, Union[int, None]]


# controller -> stream process ---------------------------------------------------------------
@dataclass(frozen=True)
class SessionDir:
    """The session's folder exists: the stream holds its shared lock and records into it at the
    start. A warm stream process opened its devices and showed a preview before it was made."""

    path: str


@dataclass(frozen=True)
class RunCheck:
    """Run the pre-exam check: the whole pipeline for ``seconds`` into a scratch folder."""

    clock: SessionClock
    seconds: float
    scratch_dir: str


@dataclass(frozen=True)
class Start:
    """The session clock is set: record from its start on."""

    clock: SessionClock


@dataclass(frozen=True)
class Stop:
    """Record frames captured before ``at_ns``, then close the segments and end."""

    at_ns: int


@dataclass(frozen=True)
class Abort:
    """End without recording (refused before the start, or the controller failed)."""


@dataclass(frozen=True)
class Pause:
    """End the stage at ``at_ns``: the banner shows on frames from ``at_ns - banner_lead_ns``,
    then the stage's segments close."""

    at_ns: int
    banner: str
    banner_lead_ns: int


@dataclass(frozen=True)
class Resume:
    """Start ``stage``: new segments, the banner on frames captured before ``banner_until_ns``."""

    stage: int
    banner: str
    banner_until_ns: int


@dataclass(frozen=True)
class SensorOverlay:
    """The GPS values the overlay shows, from the next frame on."""

    gps_fix: bool
    speed_kmh: float | None


@dataclass(frozen=True)
class PedalSpans:
    """The actuations of the last seconds of each pedal (the press going on included), so each
    frame lights the indicator exactly when it was captured during one."""

    brake: tuple[PedalSpan, ...]
    clutch: tuple[PedalSpan, ...]


@dataclass(frozen=True)
class TakePhoto:
    """Save the next frame (with its overlay) as a JPEG still at ``file`` in the session folder."""

    file: str
    role: str | None


Command = Union[SessionDir, RunCheck, Start, Stop, Abort, Pause, Resume, SensorOverlay, PedalSpans, TakePhoto]


# stream process -> controller ---------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    """The stream's devices are open (``ok``), or why not."""

    stream: str
    ok: bool
    message: str
    pid: int


@dataclass(frozen=True)
class CheckDone:
    """What the pre-exam check achieved: frames after the warm-up, drops, bytes over the same
    span (for the free-disk check), the sound level, the CPU seconds a frame cost the stream process
    (all its threads; for the processor check); ``error`` when it could not run."""

    stream: str
    seconds: float
    frames: int = 0
    dropped: int = 0
    bytes: int = 0
    audio_dbfs: float | None = None
    error: str | None = None
    cpu_s_per_frame: float | None = None


@dataclass(frozen=True)
class Stats:
    """Counters, twice a second (also the controller watchdog's sign of life); while the stream
    waits for a session (``preview``) ``captured`` and ``dropped`` count the preview."""

    stream: str
    captured: int
    dropped: int
    encoded: int
    bytes: int
    last_pts_s: float | None
    fault: bool
    audio_fault: bool
    queue: int
    skipped: int
    stage: int
    paused: bool
    audio_dbfs: float | None = None   # the level of the newest sound block (the console's meter)
    preview: bool = False             # counted while warm (no session yet): nothing was encoded


@dataclass(frozen=True)
class Thumbnail:
    """A small JPEG of a frame just captured, about twice a second, for the examiner's console."""

    stream: str
    jpeg: bytes


@dataclass(frozen=True)
class SegmentOpened:
    stream: str
    file: str
    first_pts_s: float
    stage: int


@dataclass(frozen=True)
class SegmentDiscarded:
    """A segment opened for a first frame that never came: it held no media and is gone."""

    stream: str
    file: str


@dataclass(frozen=True)
class SegmentClosed:
    """A segment ended: finalised (``closed``) or cut at its last complete fragment; ``sha256``
    of the whole file when it was finalised."""

    stream: str
    file: str
    stage: int
    sha256: str | None
    size: int
    frames: int
    dropped: int
    first_pts_s: float | None
    last_pts_s: float | None
    audio_first_pts_s: float | None
    audio_last_pts_s: float | None
    fragments: int
    closed: bool


@dataclass(frozen=True)
class FragmentWritten:
    """The newest fragment that reached the disk, its record appended to the stream's
    fragments.jsonl (``log_sha256`` is that record's chain hash: what a checkpoint of the session
    can sign). Sent with the stats, twice a second, when there is a new one."""

    stream: str
    file: str
    index: int
    end: int
    sha256: str
    log_sha256: str


@dataclass(frozen=True)
class StreamEvent:
    """A line for the session's event log (fault, recovered, error...); ``fields`` are its
    free-form details and always name the stream."""

    stream: str
    type: str
    capture_ns: int
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PhotoTaken:
    stream: str
    file: str
    role: str | None
    capture_ns: int
    sha256: str


@dataclass(frozen=True)
class Paused:
    """The pause took effect: the stage's segment is closed and frames are not recorded."""

    stream: str
    stage: int


@dataclass(frozen=True)
class IoError:
    """Writing failed (``errno`` 28: the disk is full); the stream has stopped recording."""

    stream: str
    errno: int | None
    message: str
    path: str


@dataclass(frozen=True)
class Done:
    """The stream process is ending (``reason``: stop, aborted, disk-full, io-error, controller-lost)."""

    stream: str
    reason: str


Report = Union[Ready, CheckDone, Stats, Thumbnail, SegmentOpened, SegmentDiscarded, SegmentClosed,
               FragmentWritten, StreamEvent, PhotoTaken, Paused, IoError, Done]
