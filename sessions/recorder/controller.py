"""The session controller: starts one process per stream, owns the clock, the manifest and the
event log, and decides when the session starts and stops.

Order at start: the stream processes open their devices (warm: usually long before, between
exams, see ``warm``), the folder and event log are made and handed to them, the clock starts,
manifest.json is written (and fsynced) before any frame exists, then the streams are told to go.

Stream processes are forked from a forkserver that has imported what a stream needs (PyAV,
OpenCV, NumPy, the stream package): a new one costs milliseconds, not the seconds of a fresh
interpreter, and they share those modules' memory.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import secrets
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from core import durable

from sessions import exitcodes
from core.clock import NS_PER_S, SessionClock, iso_utc, utc_now_iso
from sessions.evidence.events import EventLog
from sessions.recorder.sensor_hub import SensorHub
from sessions.recorder.exam import ExamControl
from sessions.evidence.chain import GENESIS
from sessions.evidence.checkpoints import CheckpointLog, jcs_clock
from sessions.evidence.layout import (EVENTS_NAME, RESERVE_NAME, ROUTE_NAME, TELEMETRY_NAME, chain_segments,
                                      segment_entry, session_folder, write_manifest)
from sessions.evidence.manifest import FORMAT, sha256_file
from sessions.evidence.software import software_versions
from core.profile import Profile
from sessions.evidence.lock import hold_shared
from sessions.evidence.signing import fingerprint, key_path_for, load_or_create_key, sign_manifest
from sessions.recorder.messages import (Abort, CheckDone, Done, FragmentWritten, IoError, Paused, PhotoTaken, Ready,
                                        Report, SegmentClosed, SegmentDiscarded, SegmentOpened, SessionDir, Start,
                                        Stats, Stop, StreamEvent, Thumbnail)
from sessions.recorder.stream.job import StreamJob
from sessions.recorder.stream.process import run_stream

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
# From Start to the session's first instant: every warm stream process must have ended its preview,
# made its encoder and started its source threads on the session clock by then. Measured with the
# replay profile's five streams on the 2-core test machine: 60 to 140 ms (load average 1 to 4; a
# 10 fps stream waits up to one frame for its preview to end). A late stream logs a warning.
START_LEAD_NS = 250_000_000
RESERVE_BYTES = 4 << 20
INTERRUPTS = (signal.SIGTERM, signal.SIGINT)  # the signals held while a stream process is being started
STOP_TIMEOUT_S = 15.0
WARM_RESPAWN_S = (1, 2, 5, 10, 30)  # a warm stream process that keeps dying is started again less often
# What a stream process imports, done once in the forkserver (each stream is a fork of it).
STREAM_PRELOAD = ["sessions.recorder.stream.process", "capture.factory", "av", "cv2", "numpy"]


def stream_context() -> Any:
    """The multiprocessing context stream processes start from: a forkserver with the stream's
    modules preloaded. Its processes are in the controller's process group and session (the
    forkserver is started from here), and it ends once the controller and they are gone."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(STREAM_PRELOAD)
    return ctx


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """SIGTERM and SIGINT that come while inside act when it is left, through the handlers they
    had. A process start they interrupted would be half handed over to the forkserver (its child
    then dies unpickling its queue, with a traceback) and unknown to the abort that follows.
    Handlers, not the signal mask: a mask would also be inherited by the forkserver the first
    start launches, and so by every stream process."""
    if threading.current_thread() is not threading.main_thread():
        yield  # (Python runs signal handlers in the main thread only: nothing to hold here)
        return
    before = {signum: signal.getsignal(signum) for signum in INTERRUPTS}
    if any(handler is None for handler in before.values()):  # set outside Python: leave them be
        yield
        return
    came: list[int] = []
    for signum in INTERRUPTS:
        signal.signal(signum, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        for signum in came:
            signal.raise_signal(signum)


@dataclass
class StreamRuntime:
    """What the controller knows about one stream process."""

    name: str
    job: StreamJob
    process: Any = None
    cmd_q: Any = None
    ready: bool = False
    ready_message: str = ""
    done: bool = False
    restarts: int = 0
    pid: int | None = None
    check: CheckDone | None = None     # the stream's pre-exam check result
    last_seen: float | None = None     # monotonic time of its last report (the watchdog's input)
    stalled: bool = False
    fps: float = 0.0
    _fps_mark: tuple[float, int, bool] | None = None  # (when, count, counted while warm)
    conn: Any = None                   # the read end of the stream's report pipe
    lifeline: Any = None               # the write end of its lifeline: open while the controller lives
    stats: Stats | None = None         # its latest counters
    last_fragment: FragmentWritten | None = None  # the newest fragment it logged
    last_drop_report: int = 0
    segments: list = field(default_factory=list)
    check_at: float | None = None      # monotonic time of its last check result
    check_utc: str = ""                # ... in UTC, for the manifest
    check_run: str = ""                # "idle" (warm, before the session existed) or "start"
    warm_faults: dict = field(default_factory=dict)  # device -> message: faults while warm, not recovered
    warm_restarts: int = 0             # times its warm process was started again
    respawn_after: float = 0.0

    def check_is_fresh(self, within_s: float) -> bool:
        """A check result younger than ``within_s``, with no fault of its devices since."""
        return (self.check is not None and self.check_at is not None and not self.warm_faults
                and time.monotonic() - self.check_at <= within_s)


def new_session_id(start: datetime, profile_name: str) -> str:
    return f"{start:%Y%m%dT%H%M%SZ}-{profile_name}-{secrets.token_hex(3)}"


class Recorder(ExamControl):
    """Records one session of a profile into ``out_root/<YYYY-MM-DD>/<session_id>/``."""

    def __init__(self, profile: Profile, out_root: Path, *, details: dict | None = None,
                 realtime: bool = True, gps_url: str | None = None,
                 pedals_url: str | None = None):
        self.gps_url, self.pedals_url = gps_url, pedals_url
        self.sensors: SensorHub | None = None
        self.sensors_lent = False  # the service's open hub: given back at the end, not closed
        self.profile = profile
        self.out_root = Path(out_root)
        self.details = details or {}
        self.realtime = realtime
        self.clock: SessionClock | None = None
        self.session_dir: Path | None = None
        self.session_id = ""
        self.events: EventLog | None = None
        self.manifest: dict[str, Any] = {}
        self.streams: dict[str, StreamRuntime] = {}
        self._ctx = stream_context()
        self._lock = threading.RLock()
        self._stop_requested = threading.Event()
        self.stop_reason = "stop"
        self.exit_code = exitcodes.OK
        self.stop_ns: int | None = None
        self.state = "checking"
        self.checks = []
        self.check_scratch_left: list[Path] = []  # check folders to remove once the streams end
        self.stage = 1
        self.thumbnails = False  # stream processes send small JPEGs (the console shows them)
        self.notice_shown_on = "examiner terminal"
        self.on_thumbnail: Callable[[str, bytes], None] | None = None  # the console's live pictures
        # A stream's event while there is no session (warm: a camera lost or back): (type, fields).
        self.on_warm_event: Callable[[str, dict[str, Any]], None] | None = None

    # set-up --------------------------------------------------------------------------------
    def warm(self) -> None:
        """Start one process per stream, before any session exists: each opens its devices,
        reports Ready and then reads them (a preview: thumbnails, frame rate, faults) until it is
        given the session's folder and clock. Returns at once; ``wait_ready`` waits for them.
        Nothing when they are started already."""
        if self.streams:
            return
        for spec in self.profile.streams:
            job = StreamJob(spec=spec, profile=self.profile, realtime=self.realtime, thumbnails=self.thumbnails)
            rt = StreamRuntime(name=spec.name, job=job)
            self.streams[spec.name] = rt
            self._spawn(rt)

    def answered(self) -> bool:
        """Every stream process reported Ready (or failed to)."""
        return all(rt.ready or rt.ready_message for rt in self.streams.values())

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until each stream process has opened its devices or failed to (ended, or silent for
        ``timeout_s``): a failed one is that stream's failed check, never a controller that waits
        or dies with a traceback."""
        deadline = time.monotonic() + timeout_s
        while not self.answered():
            for rt in self.streams.values():
                if not rt.ready and not rt.ready_message and rt.process is not None and not rt.process.is_alive():
                    rt.ready_message = f"its stream process ended (exit code {rt.process.exitcode}) before it was ready"
                elif not rt.ready and not rt.ready_message and time.monotonic() > deadline:
                    rt.ready_message = f"its stream process did not report ready within {timeout_s:.0f} s"
            self._pump(timeout=0.05)

    def keep_warm(self, timeout: float) -> list[tuple[str, int | None]]:
        """While waiting for a session: handle the streams' reports for up to ``timeout``, and
        start again a stream process that ended (backing off when it keeps ending). Returns the
        streams started again, with the exit code of the process that ended."""
        self._pump(timeout)
        again = []
        now = time.monotonic()
        for rt in self.streams.values():
            if rt.process is None or rt.process.is_alive() or now < rt.respawn_after:
                continue
            self._pump(timeout=0)  # its last words
            code = rt.process.exitcode
            rt.process.join(timeout=0.1)
            rt.respawn_after = now + WARM_RESPAWN_S[min(rt.warm_restarts, len(WARM_RESPAWN_S) - 1)]
            rt.warm_restarts += 1
            rt.ready, rt.ready_message, rt.check, rt.stats, rt.fps = False, "", None, None, 0.0
            rt._fps_mark = None
            rt.warm_faults.clear()
            self._spawn(rt)
            again.append((rt.name, code))
        return again

    def load_key(self) -> None:
        """The device key, loaded before anything is recorded: a key others can read, or a
        damaged one, is a reason not to start, not a surprise at the end of the exam."""
        self.key = load_or_create_key(key_path_for(self.profile))
        self.key_fingerprint = fingerprint(self.key)

    def prepare(self) -> Path:
        """Create the session folder and the event log, start the stream processes (unless they
        are warm already) and hand them the folder once each has opened its devices. Returns the
        session folder."""
        self.load_key()
        # Sensors first: a bad GPS or pedal URL is a profile error, found before anything is written.
        emit = lambda *a, **k: self.events.emit(*a, **k) if self.events else None  # noqa: E731
        if self.sensors_lent:
            assert self.sensors is not None
            self.sensors.attach(emit, end_ns=lambda: self.stop_ns)
        else:
            self.sensors = SensorHub(self.profile, emit, self.gps_url, self.pedals_url, end_ns=lambda: self.stop_ns)
        self.warm()  # (cold: the processes start up while the folder is made)
        now = datetime.now(timezone.utc)
        self.session_id = new_session_id(now, self.profile.name)
        self.session_dir = session_folder(self.out_root, now.astimezone().date(), self.session_id)
        self.session_dir.mkdir(parents=True)
        for folder in (self.session_dir.parent.parent, self.session_dir.parent, self.session_dir):
            durable.fsync_dir(folder)  # the session's folder itself must survive a power cut
        self._lock_fd = hold_shared(self.session_dir)
        self._reserve_space()
        self.events = EventLog(self.session_dir / EVENTS_NAME)
        self.sensors.start_readers()
        self.wait_ready()
        for rt in self.streams.values():
            rt.job.session_dir = str(self.session_dir)  # (a process started again mid-session gets it too)
            if rt.process is not None and rt.process.is_alive():
                rt.cmd_q.put(SessionDir(str(self.session_dir)))
        return self.session_dir

    def use_sensors(self, hub: SensorHub) -> None:
        """Record with an open hub (the service's, reading since before the exam) instead of
        opening the sensors at :meth:`prepare`; it is given back, still reading, when the session
        ends."""
        self.sensors, self.sensors_lent = hub, True

    def _release_sensors(self) -> None:
        if self.sensors is None:
            return
        if self.sensors_lent:
            self.sensors.end_session()
        else:
            self.sensors.stop()

    def _reserve_space(self) -> None:
        """Keep a little space aside, so that when the disk fills up the manifest, the event log
        and the trimmed tails can still be written (the reserve is released at that moment)."""
        assert self.session_dir is not None
        self._reserve = self.session_dir / RESERVE_NAME
        try:
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not reserve %d bytes in %s: %s", RESERVE_BYTES, self.session_dir, exc)

    def _release_reserve(self) -> None:
        try:
            self._reserve.unlink()
        except (OSError, AttributeError):
            pass

    def _spawn(self, rt: StreamRuntime, first_segment: int = 0) -> None:
        rt.cmd_q = self._ctx.Queue()
        # One pipe per stream for its reports: a stopped or hung stream process can never hold a
        # lock the others need to report (a shared queue's writer lock would).
        rt.conn, child_conn = self._ctx.Pipe(duplex=False)
        # The lifeline: only this process holds its write end (and never writes), so the stream
        # sees end of file on it when the controller is gone, however it went.
        if rt.lifeline is not None:
            rt.lifeline.close()  # a predecessor still hanging on ends with it
        life_child, rt.lifeline = self._ctx.Pipe(duplex=False)
        rt.job.first_segment = first_segment
        process = self._ctx.Process(target=run_stream, args=(rt.job, child_conn, rt.cmd_q, life_child),
                                    name=f"examrec-{rt.name}", daemon=False)
        with interrupts_held():
            process.start()
            rt.process = process  # (before an interrupt acts: so abort knows to end it)
            child_conn.close()  # only the child writes: its end closing is how we see it gone
            life_child.close()

    def abort(self, problems: dict[str, str]) -> None:
        """Give up before the start (a mandatory check failed, or only checking): the streams end
        and the folder, which holds no recording, is removed; the reason goes to the log."""
        if problems:
            log.warning("session %s refused before the start: %s", self.session_id, problems)
        started = [rt for rt in self.streams.values() if rt.process is not None]
        for rt in started:  # (an interrupt can come before every stream was started)
            rt.cmd_q.put(Abort())
        deadline = time.monotonic() + 5
        for rt in started:
            rt.process.join(timeout=max(0.1, deadline - time.monotonic()))
        for rt in started:  # one still opening a device: not a reason to stay
            if rt.process.is_alive():
                rt.process.terminate()
                rt.process.join(timeout=2)
            if rt.process.is_alive():
                rt.process.kill()
                rt.process.join(timeout=2)
            self._close_lifeline(rt)
        self.remove_check_scratch()
        self._release_sensors()
        if self.events is not None:
            self.events.close()
        if self.session_dir is not None and not list(self.session_dir.glob("*/*.mp4")):
            shutil.rmtree(self.session_dir, ignore_errors=True)
        self.state = "refused"

    @staticmethod
    def _close_lifeline(rt: StreamRuntime) -> None:
        if rt.lifeline is not None:
            rt.lifeline.close()
            rt.lifeline = None

    def emergency_stop(self, exc: BaseException) -> None:
        """The controller itself failed: stop every stream now so what it recorded is finalised,
        and name the failure in the log. The manifest stays ``recording``, so the next start (or
        `examrec repair`) treats the session as interrupted and rebuilds it from the files."""
        log.error("controller failed, stopping every stream: %r", exc)
        now = time.monotonic_ns()
        for rt in self.streams.values():
            try:
                rt.cmd_q.put(Stop(now))
                rt.cmd_q.put(Abort())
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for rt in self.streams.values():
            if rt.process is not None:
                rt.process.join(timeout=max(0.1, deadline - time.monotonic()))
                if rt.process.is_alive():
                    rt.process.terminate()
                    rt.process.join(timeout=2)
            self._close_lifeline(rt)
        self._release_sensors()
        if self.events is not None:
            try:
                self.events.emit("fault", capture_ns=now, device="controller", message=f"controller failed: {exc!r}")
            finally:
                self.events.close()

    def device_problems(self) -> dict[str, str]:
        """Streams whose devices could not be opened, with the reason in plain words."""
        return {n: rt.ready_message for n, rt in self.streams.items() if rt.ready_message and not rt.ready}

    def start(self, duration_s: float | None = None) -> None:
        """Start the clock, write the first manifest, then let the streams record."""
        assert self.session_dir is not None and self.events is not None
        # The session starts a moment from now, so every stream is armed (encoder made, threads
        # running) when its first frame is due: PTS 0 is the same instant in every file.
        now = SessionClock.start_now()
        self.clock = SessionClock(start_ns=now.start_ns + START_LEAD_NS, wall_anchor_ns=now.wall_anchor_ns + START_LEAD_NS)
        self.events.clock = self.clock
        started = self.clock.wall_utc(self.clock.start_ns)
        local = started.astimezone()
        off = local.strftime("%z")
        self.manifest = {
            "format": FORMAT,
            "session_id": self.session_id,
            "profile": self.profile.name,
            "profile_kind": self.profile.kind,
            # A replay profile records a demo: marked so nobody files it as an exam.
            **({"demo": True} if self.profile.kind == "replay" else {}),
            "software": software_versions(),
            "started_at": iso_utc(started),
            "ended_at": None,
            "state": "recording",
            "clock": jcs_clock({**self.clock.to_json(), "utc_offset": f"{off[:3]}:{off[3:]}"}),
            "details": self.details,
            "streams": [
                {"name": s.name, "width": s.width, "height": s.height, "fps": s.fps, "audio": bool(s.audio),
                 "source": s.source, "segments": [], "gaps": []}
                for s in self.profile.streams
            ],
            "stages": [{"stage": 1, "start_pts_s": 0.0, "end_pts_s": None}],
            "checks": self.checks_json(),
            "notice": self.profile.notice,
            "clock_check": None,
            "photos": [],
            "events": {"file": EVENTS_NAME, "lines": 0, "last_sha256": GENESIS},
        }
        self.checkpoints = CheckpointLog(self.session_dir, self.key)
        self.checkpoints.begin(self.manifest, self.sensors.clock_check if self.sensors and self.sensors.present else None)
        self._write_manifest()
        self.state = "recording"
        self.events.emit("start", capture_ns=self.clock.start_ns, session_id=self.session_id,
                         profile=self.profile.name, streams=[s.name for s in self.profile.streams],
                         pids={"controller": os.getpid(), **{n: rt.pid for n, rt in self.streams.items()}})
        if self.checks:
            self.events.emit("checks", capture_ns=self.clock.start_ns, results=self.checks_json())
        failed = self.failed_checks()
        if failed:
            self.events.emit("forced", capture_ns=self.clock.start_ns, failed=[c.to_json() for c in failed])
        self.events.emit("notice", capture_ns=self.clock.start_ns, text=self.profile.notice, shown_on=self.notice_shown_on)
        if self.sensors is not None and self.sensors.present:
            self.manifest["clock_check"] = self.sensors.clock_check
            self.sensors.log_clock_check()
            self.sensors.begin(self.clock, self.session_dir, self.session_id, iso_utc(started),
                               list(self.streams.values()))
        for rt in self.streams.values():
            # What is not working at the start is a fault of the session from its first instant
            # (a device lost while warm included: its recovery comes as the session's event).
            faults = dict(rt.warm_faults)
            if not rt.ready:
                faults.setdefault(f"camera {rt.name}", rt.ready_message)
            for device, message in faults.items():
                self._gap_open(rt.name, 0.0, message)
                self.events.emit("fault", capture_ns=self.clock.start_ns, stream=rt.name, device=device,
                                 message=message)
            rt._fps_mark, rt.last_drop_report = None, 0  # the session's own counters from here
            rt.cmd_q.put(Start(self.clock))
            # The watchdog counts from here: a stream has nothing to report while the checks of
            # the sensors run, and that silence is not a fault.
            rt.last_seen = time.monotonic()
        if duration_s is not None:
            self.stop_ns = self.clock.start_ns + round(duration_s * NS_PER_S)
            for rt in self.streams.values():
                rt.cmd_q.put(Stop(self.stop_ns))
        self.take_start_photos()

    def checks_json(self) -> list[dict[str, Any]]:
        """The pre-exam checks for the manifest and the event log; a camera's and the
        microphone's say which run measured them (``idle``: the device check of the warm
        processes before the exam; ``start``: at this start) and when."""
        by_check: dict[str, StreamRuntime] = {f"camera {n}": rt for n, rt in self.streams.items()}
        owner = self.profile.audio_stream
        if owner is not None and owner.name in self.streams:
            by_check["microphone"] = self.streams[owner.name]
        out = []
        for c in self.checks:
            rt = by_check.get(c.check)
            if rt is not None and rt.check is not None and rt.check_run:
                out.append({**c.to_json(), "run": rt.check_run, "checked_at": rt.check_utc})
            else:
                out.append({**c.to_json(), "run": "start"})
        return out

    # running -------------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop") -> None:
        """Stop at this instant (signal, `examrec stop`, end of duration)."""
        with self._lock:
            if self.stop_ns is None or self.stop_ns > time.monotonic_ns():
                self.stop_ns = time.monotonic_ns()
            self.stop_reason = reason
        self._stop_requested.set()

    def run(self, progress: Callable[["Recorder"], None] | None = None) -> int:
        """Record until the duration ends or a stop is requested; finish the session."""
        assert self.clock is not None
        stop_sent = False
        next_progress = time.monotonic() + 1
        while True:
            self._pump(timeout=0.1)
            self._watch_processes()
            self.watch_streams()
            with self._lock:
                self.checkpoints.heads(self.manifest)
            now = time.monotonic_ns()
            if self.stop_ns is not None and not stop_sent and (self._stop_requested.is_set() or now >= self.stop_ns):
                for rt in self.streams.values():
                    rt.cmd_q.put(Stop(self.stop_ns))
                stop_sent = True
                stop_deadline = time.monotonic() + STOP_TIMEOUT_S
            if stop_sent and (all(rt.done for rt in self.streams.values()) or time.monotonic() > stop_deadline):
                break
            if progress and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + 1
                progress(self)
        self._drain_and_join()
        return self._finish()

    def _watch_processes(self) -> None:
        for rt in self.streams.values():
            if rt.done or rt.process is None or rt.process.is_alive():
                continue
            code = rt.process.exitcode
            self._pump(timeout=0.05)  # take any last message it sent
            if rt.done:
                continue
            assert self.clock is not None and self.events is not None
            now = time.monotonic_ns()
            self.events.emit("fault", capture_ns=now, stream=rt.name, device=f"stream process {rt.name}",
                             message=f"process ended unexpectedly (exit code {code}); restarting it")
            self._gap_open(rt.name, self.clock.pts_s(now), "stream process died")
            self._mark_open_segments_interrupted(rt.name)
            if self.stop_ns is not None and now >= self.stop_ns:
                rt.done = True
                continue
            rt.restarts += 1
            rt.ready = False
            self._spawn(rt, first_segment=len(self._stream_entry(rt.name)["segments"]))
            rt.cmd_q.put(Start(self.clock))
            if self.stop_ns is not None:
                rt.cmd_q.put(Stop(self.stop_ns))

    def _pump(self, timeout: float) -> None:
        """Handle every report waiting from the stream processes (waiting up to ``timeout``)."""
        conns = {rt.conn: rt for rt in self.streams.values() if rt.conn is not None}
        if not conns:
            time.sleep(timeout)
            return
        for conn in mp.connection.wait(list(conns), timeout=timeout):
            rt = conns[conn]
            try:
                while conn.poll():
                    self._handle(rt, conn.recv())
            except (EOFError, OSError):
                rt.conn = None  # the process ended; _watch_processes decides what that means

    def _handle(self, rt: StreamRuntime, msg: Report) -> None:
        """One report of a stream process (every kind is a class of sessions.recorder.messages)."""
        rt.last_seen = time.monotonic()
        name = rt.name
        with self._lock:
            match msg:
                case Stats():
                    self._stats(rt, msg)
                case Thumbnail():
                    if self.on_thumbnail is not None:
                        self.on_thumbnail(name, msg.jpeg)
                case FragmentWritten():
                    rt.last_fragment = msg
                case SegmentOpened():
                    self._stream_entry(name)["segments"].append(
                        segment_entry(msg.file, first_pts_s=msg.first_pts_s, stage=msg.stage))
                    self._write_manifest()
                case SegmentDiscarded():
                    segs = self._stream_entry(name)["segments"]
                    segs[:] = [x for x in segs if x["file"] != msg.file]
                    self._write_manifest()
                case SegmentClosed():
                    self._segment_closed(rt, msg)
                case StreamEvent() if self.events is None:
                    self._warm_event(rt, msg)
                case StreamEvent():
                    if msg.type == "fault" and self.clock is not None:
                        self._gap_open(name, self.clock.pts_s(msg.capture_ns), msg.fields.get("message", "fault"))
                    if msg.type == "recovered" and self.clock is not None:
                        self._gap_close(name, self.clock.pts_s(msg.capture_ns))
                    self.events.emit(msg.type, capture_ns=msg.capture_ns, **msg.fields)
                case PhotoTaken():
                    self.manifest.setdefault("photos", []).append(
                        {"file": msg.file, "sha256": msg.sha256, "role": msg.role, "stream": name,
                         "pts_s": round(self.clock.pts_s(msg.capture_ns), 6) if self.clock else None})
                    assert self.events is not None
                    self.events.emit("photo", capture_ns=msg.capture_ns, stream=name, file=msg.file, role=msg.role)
                    self._write_manifest()
                case Ready():
                    rt.pid = msg.pid
                    rt.ready = msg.ok
                    rt.ready_message = msg.message or ("" if msg.ok else "not ready")
                    if rt.restarts and self.clock is not None:
                        self._gap_close(name, self.clock.pts_s(time.monotonic_ns()))
                        assert self.events is not None
                        self.events.emit("restarted", stream=name, device=f"stream process {name}", pid=rt.pid)
                case CheckDone():
                    rt.check = msg
                    rt.check_at = time.monotonic()
                    rt.check_utc = utc_now_iso()
                    # Before the session's folder exists it was the idle device check of a warm process.
                    rt.check_run = "idle" if self.session_dir is None else "start"
                    rt._fps_mark = None  # the preview's counters start again after the check
                case Paused():
                    log.debug("%s: stage %d paused", name, msg.stage)
                case IoError():
                    self._io_error(rt, msg)
                case Done():
                    rt.done = True

    def _warm_event(self, rt: StreamRuntime, msg: StreamEvent) -> None:
        """A stream's event before its session: a camera that stops delivering makes the stream
        not ready (as one that could not be opened), until it is back."""
        device = str(msg.fields.get("device") or f"stream {rt.name}")
        if msg.type == "fault":
            rt.warm_faults[device] = str(msg.fields.get("message") or "fault")
            if msg.fields.get("what") == "video":
                rt.ready, rt.ready_message = False, rt.warm_faults[device]
        elif msg.type == "recovered":
            rt.warm_faults.pop(device, None)
            if msg.fields.get("what") == "video" and rt.process is not None and rt.process.is_alive():
                rt.ready, rt.ready_message = True, ""
        if self.on_warm_event is not None:
            self.on_warm_event(msg.type, dict(msg.fields))

    def _stats(self, rt: StreamRuntime, msg: Stats) -> None:
        rt.stats = msg
        now = time.monotonic()
        # Recording: frames encoded; warm (no session yet): frames the preview took.
        count = msg.captured if msg.preview else msg.encoded
        if rt._fps_mark and (count < rt._fps_mark[1] or msg.preview != rt._fps_mark[2]):
            rt._fps_mark = None  # the counters start again (after a check, at the start)
        if rt._fps_mark and now - rt._fps_mark[0] >= 1.0:
            rt.fps = round((count - rt._fps_mark[1]) / (now - rt._fps_mark[0]), 1)
            rt._fps_mark = (now, count, msg.preview)
        elif rt._fps_mark is None:
            rt._fps_mark = (now, count, msg.preview)
        if msg.dropped > rt.last_drop_report and self.events is not None and not msg.preview:
            self.events.emit("drops", stream=rt.name, dropped_total=msg.dropped, new=msg.dropped - rt.last_drop_report)
            rt.last_drop_report = msg.dropped

    def _segment_closed(self, rt: StreamRuntime, msg: SegmentClosed) -> None:
        """A segment is finished (or cut at its last fragment): its entry gets the final figures."""
        entry = self._segment(rt.name, msg.file)
        entry.update({"sha256": msg.sha256, "size": msg.size, "frames": msg.frames, "dropped": msg.dropped,
                      "closed": bool(msg.closed)})
        if msg.first_pts_s is not None and msg.last_pts_s is not None:
            entry["first_pts_s"] = round(msg.first_pts_s, 6)
            entry["last_pts_s"] = round(msg.last_pts_s, 6)
        if msg.audio_first_pts_s is not None and msg.audio_last_pts_s is not None:
            entry["audio_first_pts_s"] = round(msg.audio_first_pts_s, 6)
            entry["audio_last_pts_s"] = round(msg.audio_last_pts_s, 6)
        self._write_manifest()

    def _io_error(self, rt: StreamRuntime, msg: IoError) -> None:
        """A stream could not write: a full disk ends the session with exit code 4, any other
        write error with 5; the reserve is released so the manifest and logs can be finished."""
        assert self.events is not None
        free = _free_bytes(Path(msg.path))
        self._release_reserve()
        disk_full = msg.errno == errno.ENOSPC
        message = (f"disk full on {msg.path} ({free / 1e6:.1f} MB free): recording stopped; "
                   f"everything written so far stays playable. Free space or use another --out."
                   if disk_full else f"write error on {msg.path}: {msg.message}")
        if disk_full:
            self.events.emit("disk_full", stream=rt.name, path=msg.path, free_bytes=free, message=message)
            self.exit_code = exitcodes.DISK_FULL
        else:
            self.events.emit("error", stream=rt.name, message=message)
            self.exit_code = exitcodes.INTERRUPTED
        log.error("%s", message)
        self.request_stop("disk-full" if disk_full else "io-error")

    # manifest ------------------------------------------------------------------------------
    def _stream_entry(self, name: str) -> dict:
        return next(s for s in self.manifest["streams"] if s["name"] == name)

    def _segment(self, name: str, file: str) -> dict:
        for seg in self._stream_entry(name)["segments"]:
            if seg["file"] == file:
                return seg
        raise KeyError(file)

    def _gap_open(self, name: str, pts_s: float, reason: str) -> None:
        gaps = self._stream_entry(name)["gaps"]
        if gaps and gaps[-1]["end_pts_s"] is None:
            return
        gaps.append({"start_pts_s": round(max(0.0, pts_s), 6), "end_pts_s": None, "reason": reason})
        self._write_manifest()

    def _gap_close(self, name: str, pts_s: float) -> None:
        gaps = self._stream_entry(name)["gaps"]
        if gaps and gaps[-1]["end_pts_s"] is None:
            gaps[-1]["end_pts_s"] = round(max(pts_s, gaps[-1]["start_pts_s"]), 6)  # a gap never ends before it began
            self._write_manifest()

    def _mark_open_segments_interrupted(self, name: str) -> None:
        for seg in self._stream_entry(name)["segments"]:
            if not seg["closed"] and seg["sha256"] is None:
                seg["interrupted"] = True

    def _chain_segments(self) -> None:
        for stream in self.manifest["streams"]:
            chain_segments(stream["segments"])

    def _write_manifest(self) -> None:
        if not self.manifest or self.session_dir is None:
            return
        with self._lock:
            self._chain_segments()
            if self.events is not None:
                self.manifest["events"]["last_sha256"] = self.events.last_hash
                self.manifest["events"].update(lines=self.events.lines, last_sha256=self.events.last_hash)
            write_manifest(self.session_dir, self.manifest)
            if getattr(self, "checkpoints", None) is not None:
                self.checkpoints.heads(self.manifest, force=True)

    # finishing -----------------------------------------------------------------------------
    def _drain_and_join(self) -> None:
        deadline = time.monotonic() + 5
        for rt in self.streams.values():
            while rt.process.is_alive() and time.monotonic() < deadline:
                self._pump(timeout=0.1)
            if rt.process.is_alive():
                log.error("%s: stream process did not end; terminating it", rt.name)
                rt.process.terminate()
            rt.process.join(timeout=2)
        self._pump(timeout=0.2)
        for rt in self.streams.values():
            self._close_lifeline(rt)
        self.remove_check_scratch()

    def _finish(self) -> int:
        assert self.events is not None and self.clock is not None and self.session_dir is not None
        end_ns = min(self.stop_ns or time.monotonic_ns(), time.monotonic_ns())
        open_segments = [seg["file"] for s in self.manifest["streams"] for seg in s["segments"] if not seg["closed"]]
        for stage in self.manifest["stages"]:
            if stage["end_pts_s"] is None:
                stage["end_pts_s"] = round(self.clock.pts_s(end_ns), 6)
        if self.sensors is not None:
            self._release_sensors()
            self.manifest["sensors"] = self.sensors.counters()
            self.manifest["sensor_gaps"] = self.sensors.gaps
            for key, name in (("telemetry", TELEMETRY_NAME), ("route", ROUTE_NAME)):
                path = self.session_dir / name
                if path.exists():
                    self.manifest[key] = {"file": name, "sha256": sha256_file(path)}
        clean = self.exit_code == exitcodes.OK and not open_segments
        self.events.emit("stop", capture_ns=end_ns, reason=self.stop_reason,
                         **({} if clean else {"unfinished_segments": open_segments}))
        self.manifest["ended_at"] = iso_utc(self.clock.wall_utc(end_ns))
        self.manifest["state"] = "finished" if clean else "interrupted"
        self.manifest["events"].update(lines=self.events.lines, last_sha256=self.events.last_hash)
        self.events.close()
        self._release_reserve()
        self._finalize_manifest()
        self.state = self.manifest["state"]
        if not clean and self.exit_code == exitcodes.OK:
            self.exit_code = exitcodes.INTERRUPTED
        return self.exit_code

    def _finalize_manifest(self) -> None:
        """Last manifest write, signed with the device key: from here on any change is detectable."""
        with self._lock:
            self._chain_segments()
            self.checkpoints.heads(self.manifest, force=True)
            self.manifest = sign_manifest(self.manifest, self.key)
            assert self.session_dir is not None
            path = write_manifest(self.session_dir, self.manifest)
            self.checkpoints.finish(path.read_bytes(), self.manifest["state"])
            self.checkpoints.close()


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0
