"""The recorder service behind `examrec serve`: always running, idle between exams.

Idle, it keeps one process per stream open (warm: the cameras and the microphone open, read as
a preview for the console's thumbnails and frame rates, a lost camera a fault at once; nothing
written) and watches what it can without a session (disk, power, uploads due, the last exam's
result); every [checks] idle_every_s the warm processes run the device check (frames through the
encoder). An exam starts with its details: the session folder is made and handed to the warm
processes, the pre-exam checks are those of the last idle device check when it is recent (else a
short one runs), the notice is shown, the session records; at stop it is closed, signed,
verified, a new warm set is started and the service is idle again for the next exam. The control socket (`examrec start|pause|
resume|stop|status|photo`), the console and a hardware button all call ``dispatch``.

Device faults are kept in a list until the examiner acknowledges each (the acknowledgement is an
event of the session). Nothing here deletes, edits or silently stops a recording.
"""
from __future__ import annotations

import itertools
import logging
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.clock import format_duration, utc_now_iso
from core.profile import Profile
from sessions.evidence.summary import summary
from sessions.evidence.verify import NotASession, verify_session
from sessions.recorder.checks import failed_mandatory, overdue_now, power_checks
from sessions.recorder.controller import Recorder
from sessions.recorder.exam import IllegalTransition
from sessions.recorder.sensor_hub import SensorHub

log = logging.getLogger(__name__)

DETAIL_KEYS = ("candidate", "candidate_id", "examiner", "plate", "centre", "exam")
EXAM_TYPES = ("theory", "practical")
IDLE_REFRESH_S = 5.0
STANDBY_PUMP_S = 0.05        # the standby loop handles the warm processes' reports this often
START_CHECK_S = 1.0          # the short check at Start when the idle device check is not recent
WARM_RETRY_S = 5.0           # a warm set that could not be started is tried again after this
IDLE_SENSOR_CHECK_S = 60.0   # GPS fix, clock offset and pedal heartbeat, re-checked while idle
HUNG_S = 30.0                # an exam's recording loop silent this long is hung (systemd's watchdog then restarts)
BUSY = ("starting", "recording", "paused", "stopping")


@dataclass
class Fault:
    """A device fault shown to the examiner until acknowledged."""

    id: int
    t_utc: str
    device: str
    message: str
    stream: str | None = None
    session_id: str = ""
    acknowledged: bool = False
    recovered: bool = False


@dataclass
class ExamResult:
    """What the examiner is told after stop (and `examrec stop` prints)."""

    session_id: str
    folder: str
    state: str
    duration: str
    verify_ok: bool
    verify: str
    exit_code: int


@dataclass
class ServiceSettings:
    """Defaults an exam's details take when not given (from the profile's [exam], then `serve` options)."""

    examiner: str | None = None
    plate: str | None = None
    centre: str | None = None
    exam: str | None = None
    force: bool = False          # start even when a mandatory check fails (logged as `forced`)
    gps_url: str | None = None
    pedals_url: str | None = None
    realtime: bool = True
    extra: dict = field(default_factory=dict)


class DetailsError(ValueError):
    """An exam's details are missing or wrong; the message says which and what to do."""


def exam_details(given: dict[str, Any], defaults: dict[str, str | None]) -> dict[str, str]:
    """The session details: given values win, then the defaults; text only, known keys only."""
    unknown = set(given) - set(DETAIL_KEYS)
    if unknown:
        raise DetailsError(f"unknown detail(s) {sorted(unknown)}; allowed: {', '.join(DETAIL_KEYS)}")
    details = {k: v for k, v in defaults.items() if v}
    for key, value in given.items():
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise DetailsError(f"{key}: must be text, got {value!r}")
        details[key] = value.strip()
    if not details.get("candidate"):
        raise DetailsError("an exam needs the candidate's name (candidate)")
    if details.get("exam") and details["exam"] not in EXAM_TYPES:
        raise DetailsError(f"exam type {details['exam']!r}: allowed {', '.join(EXAM_TYPES)}")
    return details


class RecorderService:
    """One profile's recorder, idle or recording one exam at a time."""

    def __init__(self, profile: Profile, out_root: Path, settings: ServiceSettings | None = None):
        self.profile = profile
        self.out_root = Path(out_root)
        self.settings = settings or ServiceSettings()
        self.state = "idle"
        self.recorder: Recorder | None = None
        self.last: ExamResult | None = None
        self.refusal: dict[str, Any] | None = None
        self.console_url: str | None = None
        self.faults: list[Fault] = []
        self.thumbnails: dict[str, tuple[float, bytes]] = {}
        self._fault_ids = itertools.count(1)
        self._lock = threading.RLock()          # one Start at a time
        self.standby: Recorder | None = None    # the warm stream processes, waiting for the next exam
        # Held by the standby loop while it uses the warm processes (reports, an idle device
        # check): a Start takes the warm set only in between.
        self._standby_lock = threading.Lock()
        self._warm_retry_at = 0.0
        self._faults_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._idle: dict[str, Any] = {}
        self._idle_at = 0.0
        self._bytes_per_s: float | None = None
        self._changed = threading.Condition()
        self.version = 0                      # bumped on every change the console should show at once
        self.on_state: list[Callable[[str], None]] = []
        self.idle_sensors: SensorHub | None = None
        self._beat = time.monotonic()         # the exam's recording loop came round (once a second)
        self.device_checks: dict[str, Any] | None = None   # the last idle run of the device checks
        self._idle_fps: dict[str, float] = {}
        self._device_faults: dict[str, Fault] = {}   # device -> its fault while idle, until it works again
        self.idle_checks: list[dict[str, Any]] = []
        self._sensor_stop = threading.Event()
        self._sensor_thread: threading.Thread | None = None

    # sensors between exams -------------------------------------------------------------------
    def open_idle_sensors(self) -> None:
        """Keep the GPS and the pedal sensor open while idle: the console shows the fix, the
        speed and the pedals, a fault is listed at once, and the clock offset and heartbeat are
        re-checked every minute. They are lent to each exam's recorder (nothing is reopened at
        Start: the fix and the heartbeat are there already) and come back when it ends."""
        if self.idle_sensors is not None or not (self.profile.gps or self.profile.pedals or self.settings.gps_url
                                                 or self.settings.pedals_url):
            return
        try:
            hub = SensorHub(self.profile, self._idle_event, self.settings.gps_url, self.settings.pedals_url)
            hub.start_readers()
        except Exception as exc:  # a sensor that cannot open is a fault to show, not the end of the service
            log.warning("sensors cannot be opened while idle: %s", exc)
            self._add_fault({"type": "fault", "device": "sensors", "message": str(exc)})
            return
        self._keep_idle_sensors(hub)

    def _keep_idle_sensors(self, hub: SensorHub) -> None:
        self.idle_sensors = hub
        self._sensor_stop = threading.Event()
        self._sensor_thread = threading.Thread(target=self._check_idle_sensors, args=(hub, self._sensor_stop),
                                               name="idle-sensors", daemon=True)
        self._sensor_thread.start()

    def _lend_idle_sensors(self) -> SensorHub | None:
        """The open sensors, for the exam about to start (the idle re-checks stop)."""
        hub, self.idle_sensors = self.idle_sensors, None
        self._sensor_stop.set()
        return hub

    def _sensors_back(self, rec: Recorder | None) -> None:
        """After an exam (or a refused Start): the lent sensors are idle again, still reading;
        opened anew only when none were lent."""
        hub = rec.sensors if rec is not None and rec.sensors is not None and rec.sensors_lent else None
        if hub is None:
            self.open_idle_sensors()
            return
        hub.end_session()  # (nothing when the recorder gave it back already)
        self._keep_idle_sensors(hub)

    def keep_warm(self, stop: threading.Event) -> None:
        """While idle, keep a warm set of stream processes: started when the service starts and
        again after each exam, a process that ends started again, their reports handled (the
        thumbnails, frame rates and faults the console shows). Every [checks] idle_every_s, and
        once for each new warm set, the warm processes run the device check (frames through the
        encoder, sound level, disk): a camera that fails is a fault (its tile red) until it works
        again. Runs on its own thread until ``stop``; then the warm processes end."""
        every = float(self.profile.section("checks")["idle_every_s"])
        try:
            while not stop.is_set():
                if self.state != "idle":
                    stop.wait(0.1)
                    continue
                with self._standby_lock:
                    try:
                        self._standby_round(stop, every)
                    except Exception as exc:  # a warm set that fails is rebuilt, never the end of the service
                        log.exception("warm stream processes")
                        self._add_fault({"t_utc": utc_now_iso(), "device": "stream processes",
                                         "message": f"could not keep the cameras open: {exc}"})
                        self._drop_standby()
                        self._warm_retry_at = time.monotonic() + WARM_RETRY_S
                time.sleep(0.005)  # a Start waiting for the warm set takes it here
        finally:
            self.close_standby()

    def _standby_round(self, stop: threading.Event, every: float) -> None:
        """One round of the standby loop (under the standby lock)."""
        rec = self.standby
        if rec is None:
            if stop.is_set() or self.state != "idle" or time.monotonic() < self._warm_retry_at:
                time.sleep(STANDBY_PUMP_S)
                return
            rec = self.standby = self._new_recorder()
            rec.warm()
        for name, code in rec.keep_warm(STANDBY_PUMP_S):
            device = f"stream process {name}"
            if device not in self._device_faults:
                self._add_device_fault(device, name, f"ended while waiting for an exam (exit code {code}); "
                                                     f"started again")
        for device, fault in list(self._device_faults.items()):
            rt = rec.streams.get(fault.stream or "")
            if device.startswith("stream process ") and rt is not None and rt.ready:
                self._clear_device_fault(device)
        if every > 0 and rec.answered() and self._device_check_due(rec, every):
            self._run_device_checks(rec)
            self.bump()

    def _new_recorder(self, details: dict[str, str] | None = None) -> Recorder:
        rec = Recorder(self.profile, self.out_root, details=details, realtime=self.settings.realtime,
                       gps_url=self.settings.gps_url, pedals_url=self.settings.pedals_url)
        rec.thumbnails = self.console_url is not None  # pictures only for a console to show them
        rec.on_thumbnail = self._on_thumbnail
        rec.on_warm_event = self._warm_event
        return rec

    @staticmethod
    def _device_check_due(rec: Recorder, every: float) -> bool:
        """A warm process (new, or started again) not yet checked, or the last check too old."""
        ready = [rt for rt in rec.streams.values() if rt.ready]
        if any(rt.check_at is None for rt in ready):
            return True
        return bool(ready) and time.monotonic() - min(rt.check_at for rt in ready if rt.check_at) >= every

    def take_standby(self) -> Recorder | None:
        """The warm set, for an exam (waiting for an idle device check in progress to finish);
        None when there is none (the exam starts its stream processes itself)."""
        with self._standby_lock:
            rec, self.standby = self.standby, None
        return rec

    def close_standby(self) -> None:
        """The warm stream processes end (an idle device check in progress finishes first)."""
        with self._standby_lock:
            self._drop_standby()

    def _drop_standby(self) -> None:
        rec, self.standby = self.standby, None
        if rec is not None and rec.streams:
            rec.abort({})

    def _run_device_checks(self, rec: Recorder) -> None:
        """The device check on the warm processes, kept for the console and for the next Start."""
        rec.load_key()
        results = rec.run_checks()
        self._idle_fps = {name: round(rt.check.frames / rt.check.seconds, 1)
                          for name, rt in rec.streams.items() if rt.check is not None and rt.check.seconds}
        self.device_checks = {"at": utc_now_iso(), "checks": [c.to_json() for c in results]}
        for spec in self.profile.streams:
            device = f"camera {spec.name}"
            result = next((c for c in results if c.check == device), None)
            if result is not None and not result.ok and device not in self._device_faults:
                self._add_device_fault(device, spec.name, result.detail)
            elif result is not None and result.ok and device in self._device_faults:
                self._clear_device_fault(device)

    def _warm_event(self, type_: str, fields: dict[str, Any]) -> None:
        """A warm stream's fault (its tile red, listed until acknowledged) or recovery."""
        device = str(fields.get("device") or "device")
        if type_ == "fault" and device not in self._device_faults:
            self._add_device_fault(device, fields.get("stream"), str(fields.get("message") or "fault"))
        elif type_ == "recovered" and device in self._device_faults:
            self._clear_device_fault(device)

    def _add_device_fault(self, device: str, stream: str | None, message: str) -> None:
        self._add_fault({"t_utc": utc_now_iso(), "device": device, "stream": stream, "message": message})
        self._device_faults[device] = self.faults[-1]

    def _clear_device_fault(self, device: str) -> None:
        fault = self._device_faults.pop(device, None)
        if fault is not None:
            fault.recovered = True
            self.bump()

    def close_idle_sensors(self) -> None:
        hub, self.idle_sensors = self.idle_sensors, None
        # The check thread is not waited for (it may be waiting for a fix): it ends on its own.
        self._sensor_stop.set()
        if hub is not None:
            hub.stop()

    def _check_idle_sensors(self, hub: SensorHub, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.idle_checks = [c.to_json() for c in hub.checks(wait_s=5.0, keep=False)]
            except Exception:  # a check that fails to run is retried; the readers keep their state
                log.exception("idle sensor check")
            self.bump()
            stop.wait(IDLE_SENSOR_CHECK_S)

    def _idle_event(self, type_: str, capture_ns: int | None = None, **fields: Any) -> None:
        if type_ == "fault":
            self._add_fault({"type": type_, "t_utc": utc_now_iso(), **fields})

    # details ---------------------------------------------------------------------------------
    def defaults(self) -> dict[str, str | None]:
        exam = self.profile.section("exam")
        return {"examiner": self.settings.examiner or exam["examiner"], "plate": self.settings.plate or exam["plate"],
                "centre": self.settings.centre or exam["centre"], "exam": self.settings.exam or exam["exam"]}

    # commands --------------------------------------------------------------------------------
    def dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one request from the control socket, the console or the button."""
        cmd = req.get("cmd")
        try:
            if cmd == "ping":
                return {"ok": True}
            if cmd == "status":
                return {"ok": True, **self.status()}
            if cmd == "start":
                return {"ok": True, **self.start_exam(dict(req.get("details") or {}), force=bool(req.get("force")),
                                                      wait=bool(req.get("wait", True)))}
            if cmd == "ack":
                return {"ok": True, **self.acknowledge(int(req.get("fault", 0)), str(req.get("by") or "examiner"))}
            if cmd == "toggle":  # the hardware button: pause when recording, resume when paused
                cmd = "resume" if self.state == "paused" else "pause"
                req = {**req, "cmd": cmd, "reason": req.get("reason") or self.profile.section("button")["reason"]}
            if cmd in ("pause", "resume", "stop", "photo"):
                rec = self.recorder
                if rec is None or self.state not in ("recording", "paused", "stopping"):
                    raise IllegalTransition(f"cannot {cmd}: no exam is running (the recorder is {self.state})")
                answer = rec.dispatch(req)
                self._sync_state()
                if answer.get("ok") and cmd == "stop":
                    answer["session_id"] = rec.session_id
                return answer
        except IllegalTransition as exc:
            return {"ok": False, "error": str(exc), "state": self.state}
        except DetailsError as exc:
            return {"ok": False, "error": str(exc), "state": self.state}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _sync_state(self) -> None:
        rec = self.recorder
        if rec is not None and rec.state in ("recording", "paused", "stopping"):
            self._set_state(rec.state)

    def _set_state(self, state: str) -> None:
        with self._changed:
            changed = state != self.state
            self.state = state
            self.version += 1
            self._changed.notify_all()
        if changed:
            for listener in self.on_state:
                listener(state)

    def bump(self) -> None:
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait_change(self, version: int, timeout: float) -> int:
        """Block until something changed after ``version`` (or the timeout); the new version."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != version, timeout=timeout)
            return self.version

    def start_exam(self, given: dict[str, Any], force: bool = False, wait: bool = True) -> dict[str, Any]:
        """Start an exam for a candidate: the session folder goes to the warm stream processes
        (started now when there are none), the pre-exam checks (the idle device check's when
        recent), the notice, and record. With ``wait``, returns once it records (or was refused,
        with the failed checks)."""
        with self._lock:
            if self.state != "idle":
                raise IllegalTransition(f"cannot start: an exam is already {self.state}")
            details = exam_details(given, self.defaults())
            self.refusal = None
            self._set_state("starting")
            lent = self._lend_idle_sensors()
            started = threading.Event()
            self._worker = threading.Thread(target=self._run_exam, args=(details, force or self.settings.force, started, lent),
                                            name="exam", daemon=True)
            self._worker.start()
        if not wait:
            return {"state": "starting"}
        started.wait()
        if self.refusal is not None:
            raise IllegalTransition(self.refusal["error"])
        rec = self.recorder
        assert rec is not None
        return {"state": self.state, "session_id": rec.session_id, "session": str(rec.session_dir),
                "checks": [c.to_json() for c in rec.checks]}

    def _run_exam(self, details: dict[str, str], force: bool, started: threading.Event,
                  sensors: SensorHub | None) -> None:
        rec = self.take_standby() or self._new_recorder()
        if sensors is not None:
            rec.use_sensors(sensors)
        rec.details = details
        rec.notice_shown_on = "examiner's console"
        checks = self.profile.section("checks")
        every = float(checks["idle_every_s"])
        self.recorder = rec
        try:
            rec.prepare()
            assert rec.events is not None
            rec.events.observers.append(self._on_event)
            # The idle device check of these very processes counts when it is recent (and no
            # fault came since); otherwise a short one runs now.
            results = rec.run_checks(seconds=min(float(checks["sample_s"]), START_CHECK_S),
                                     fresh_within_s=every if every > 0 else None)
            failed = failed_mandatory(results)
            # The checks measured each stream's bitrate: disk left is told in hours of recording.
            rates = [r.bytes / max(0.1, r.seconds) for r in (rt.check for rt in rec.streams.values()) if r]
            if rates:
                self._bytes_per_s = sum(rates)
            if failed and not force:
                names = ", ".join(f"{c.check} ({c.detail})" for c in failed)
                self.refusal = {"error": f"not recording: {len(failed)} pre-exam check(s) failed: {names}",
                                "checks": [c.to_json() for c in results]}
                rec.abort({c.check: c.detail for c in failed})
                self.recorder = None
                self._sensors_back(rec)  # (before idle: a Start right after finds them)
                self._set_state("idle")
                started.set()
                return
            rec.start()
            self._beat = time.monotonic()
            self._set_state("recording")
            started.set()
            code = rec.run(progress=self._progress)
        except BaseException as exc:  # the service outlives a failed exam; what was recorded is kept
            log.exception("exam failed")
            if rec.streams:
                rec.emergency_stop(exc)
            if not started.is_set():
                self.refusal = {"error": f"the exam could not start: {exc}"}
                self.recorder = None
                self._sensors_back(rec)  # (before idle: a Start right after finds them)
                self._set_state("idle")
                started.set()
                return
            code = 5
        self._finish(rec, code)

    def _progress(self, rec: Recorder) -> None:
        self._beat = time.monotonic()
        self._sync_state()

    def loop_alive(self) -> bool:
        """False when a recording exam's loop has not come round for HUNG_S: the service is hung
        and the systemd watchdog must not be fed."""
        if self.state in ("recording", "paused") and self.recorder is not None:
            return time.monotonic() - self._beat < HUNG_S
        return True

    def _finish(self, rec: Recorder, code: int) -> None:
        folder = rec.session_dir
        assert folder is not None
        try:
            report = verify_session(folder)
            ok, detail = report.ok, ("ok" if report.ok else "; ".join(str(p) for p in report.problems[:3]))
        except NotASession as exc:
            ok, detail = False, str(exc)
        try:
            info = summary(folder)
            duration = format_duration(info["duration_s"] or 0.0)
            state = info["state"]
        except NotASession:
            duration, state = "00:00:00", "interrupted"
        self.last = ExamResult(rec.session_id, str(folder), state, duration, ok, detail, code)
        log.info("exam %s saved in %s (%s), verify: %s", rec.session_id, folder, state, detail)
        self.recorder = None
        self._sensors_back(rec)  # (before idle: a Start right after finds them)
        self._set_state("idle")

    def request_stop(self, reason: str) -> None:
        """Stop the running exam (SIGTERM to the service); the session is closed and signed."""
        rec = self.recorder
        if rec is not None and self.state in ("recording", "paused"):
            rec.request_stop(reason)
            self._set_state("stopping")

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running exam (if any) to be closed and signed."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    # live state --------------------------------------------------------------------------------
    def _on_thumbnail(self, stream: str, jpeg: bytes) -> None:
        self.thumbnails[stream] = (time.monotonic(), jpeg)

    def _on_event(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "fault":
            self._add_fault(record)
        elif kind in ("recovered", "restarted"):
            for f in self.faults:
                if f.stream is not None and f.stream == record.get("stream"):
                    f.recovered = True
            self.bump()

    def _add_fault(self, record: dict[str, Any]) -> None:
        rec = self.recorder
        self.faults.append(Fault(next(self._fault_ids), record.get("t_utc", ""),
                                 str(record.get("device") or record.get("stream") or "device"),
                                 str(record.get("message") or record.get("reason") or ""), record.get("stream"),
                                 rec.session_id if rec else ""))
        self.bump()

    def acknowledge(self, fault_id: int, by: str) -> dict[str, Any]:
        """The examiner saw the fault: an event in the session; it leaves the list."""
        with self._faults_lock:  # not the start lock: an idle device check must not delay it
            fault = next((f for f in self.faults if f.id == fault_id and not f.acknowledged), None)
            if fault is None:
                raise IllegalTransition(f"no unacknowledged fault number {fault_id}")
            fault.acknowledged = True
            rec = self.recorder
            if rec is not None and rec.events is not None and rec.session_id == fault.session_id:
                rec.events.emit("fault_acknowledged", device=fault.device, stream=fault.stream,
                                fault_t_utc=fault.t_utc, message=fault.message, by=by)
            else:
                # Its session is closed and signed (or it happened while idle): nothing may be
                # added to a signed session, so the acknowledgement goes to the service's log.
                log.warning("fault acknowledged by %s after its session %s: %s %s: %s", by,
                            fault.session_id or "(idle)", fault.t_utc, fault.device, fault.message)
        self.bump()
        return {"fault": fault_id, "acknowledged": True}

    def idle_health(self) -> dict[str, Any]:
        """Disk left (in hours at the last measured rate), power and uploads due; refreshed every few s."""
        if time.monotonic() - self._idle_at < IDLE_REFRESH_S and self._idle:
            return self._idle
        free = shutil.disk_usage(self.out_root).free if self.out_root.exists() else \
            shutil.disk_usage(self.out_root.parent if self.out_root.parent.exists() else "/").free
        hours = round(free / self._bytes_per_s / 3600, 1) if self._bytes_per_s else None
        try:
            late = [o.session_id for o in overdue_now(self.out_root, list(self.profile.section("upload")["holidays"]))] \
                if self.out_root.exists() else []
        except (OSError, ValueError):
            late = []
        self._idle = {"disk_free_gb": round(free / 1e9, 2), "disk_hours": hours,
                      "power": [c.to_json() for c in power_checks()], "uploads_overdue": late}
        self._idle_at = time.monotonic()
        return self._idle

    def _idle_streams(self) -> list[dict[str, Any]]:
        """Each stream between exams: its warm process (``pid``, ``warm`` once its devices are
        open), the frame rate and drops of its preview (the last device check's rate until the
        preview has one), IDLE, or LOST while its camera has a fault."""
        warm = self.standby or self.recorder
        out = []
        for spec in self.profile.streams:
            rt = warm.streams.get(spec.name) if warm is not None else None
            faulty = [d for d, f in self._device_faults.items() if f.stream == spec.name]
            lost = f"camera {spec.name}" in self._device_faults or (rt is not None and not rt.ready
                                                                     and bool(rt.ready_message))
            state = "STARTING" if self.state == "starting" else ("LOST" if lost else "IDLE")
            out.append({"stream": spec.name, "state": state,
                        "fps": (rt.fps if rt is not None and rt.fps else self._idle_fps.get(spec.name, 0.0)),
                        "frames": 0, "dropped": rt.stats.dropped if rt is not None and rt.stats else 0,
                        "health": "FAULT" if lost or faulty else "ok", "mb": 0.0,
                        "warm": bool(rt is not None and rt.ready), "pid": rt.pid if rt is not None else None})
        return out

    def status(self) -> dict[str, Any]:
        """Everything `examrec status` and the console show."""
        rec = self.recorder
        out: dict[str, Any] = {"service": True, "state": self.state, "profile": self.profile.name,
                               "demo": self.profile.kind == "replay", "console_url": self.console_url,
                               "defaults": self.defaults(), "version": self.version,
                               "pause_reasons": list(self.profile.section("exam")["pause_reasons"]),
                               "pause_banner_s": self.profile.pause_banner_s}
        out.update(self.idle_health())
        if rec is not None and rec.clock is not None and self.state in ("recording", "paused", "stopping"):
            live = rec.status()
            live.pop("state", None)
            live.pop("disk_free_gb", None)
            live.pop("uploads_overdue", None)
            out.update(live)
            out["started_at"] = rec.manifest.get("started_at")
            owner = self.profile.audio_stream
            if owner is not None and owner.name in rec.streams:
                stats = rec.streams[owner.name].stats
                out["audio_dbfs"] = stats.audio_dbfs if stats is not None else None
        else:
            hub = self.idle_sensors
            if hub is not None:
                out.update(hub.status())
                out["sensor_checks"] = self.idle_checks
            out.update({"stage": 0, "session_id": "", "session": "", "elapsed": "00:00:00", "elapsed_s": 0.0,
                        "details": rec.details if rec else {}, "streams": self._idle_streams()})
            out["device_checks"] = self.device_checks
            warm = self.standby
            owner = self.profile.audio_stream
            if warm is not None and owner is not None and owner.name in warm.streams:
                stats = warm.streams[owner.name].stats
                out["audio_dbfs"] = stats.audio_dbfs if stats is not None else None
        if out.get("pedals"):
            pressed = float(self.profile.section("pedal_settings")["threshold_percent"])
            for pedal in ("brake", "clutch"):
                out["pedals"][f"{pedal}_on"] = (out["pedals"].get(pedal) or 0) >= pressed
        if self._bytes_per_s and out.get("disk_free_gb") is not None:
            out["disk_hours"] = round(out["disk_free_gb"] * 1e9 / self._bytes_per_s / 3600, 1)
        if rec is not None:
            # A stream with a fault not yet recovered is lost to the examiner, whatever its
            # process last reported (it may still be trying to reconnect).
            # The fault's own words tell a stalled camera (connected, no pictures) from a lost one.
            open_faults = {f.stream: ("STALLED" if "stall" in f.message else "LOST") for f in self.faults
                           if f.stream and not f.recovered and f.session_id == rec.session_id}
            for s in out["streams"]:
                if s["stream"] in open_faults and s["state"] in ("LIVE", "PAUSED", "STALLED"):
                    s["state"] = open_faults[s["stream"]]
        out["faults"] = [asdict(f) for f in self.faults if not f.acknowledged]
        out["last"] = asdict(self.last) if self.last else None
        out["refusal"] = self.refusal
        return out
