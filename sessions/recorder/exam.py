"""What makes the recorder an exam recorder: pre-exam checks, stages with pause and resume, live
status and control, face stills, device-fault watch. Mixed into the session controller
(sessions/recorder/controller.py), whose state it reads and changes under its lock.

DESIGN, the pause rule (UA II.3) lives in ``pause`` and ``resume``: a pause needs its reason and
the vehicle's plate; every stream shows the banner (time, reason, plate) for the profile's
``pause_banner_s``, and the stage's segments end at that instant, which is the stage's end in
the manifest; a resume before that instant cancels the pause (the stage goes on uncut, the
resume event says ``cancelled_pause``); after it, a resume starts the next stage's segments and
shows its own banner for the same time. The plate defaults to the exam's. Both are events.
Each stream applies the rule by its frames' capture stamps in sessions/recorder/stream/stage_gate.py.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sessions.evidence.layout import photo_name
from sessions.recorder.checks import (CheckResult, audio_check, disk_check, failed_mandatory, overdue_now, power_checks,
                                      processor_check, stream_check, upload_check, writable_check)
from core.clock import NS_PER_S, SessionClock, format_duration
from sessions.recorder.messages import CheckDone, Pause, Resume, RunCheck, TakePhoto

log = logging.getLogger(__name__)

CHECK_LEAD_NS = 300_000_000
WATCHDOG_S = 1.5   # a stream process silent this long is a fault (it reports twice a second)
CANCEL_MARGIN_NS = 250_000_000  # a resume closer than this to the pause instant waits for the pause


class IllegalTransition(Exception):
    """A command the session's state does not allow; the message says the state."""


class ExamControl:
    """Lifecycle: checking -> ready -> recording (stage N) <-> paused -> finished | interrupted."""

    stage: int = 1
    pause_at_ns: int | None = None
    checks: list[CheckResult]
    check_scratch_left: list[Path]

    # pre-exam checks -----------------------------------------------------------------------
    def run_checks(self, seconds: float | None = None, fresh_within_s: float | None = None) -> list[CheckResult]:
        """Run every check (streams through the whole pipeline for ``seconds``); the results are
        kept for the manifest. Needs the stream processes started (warm() or prepare()). A
        stream whose last check is younger than ``fresh_within_s`` (the idle device check of a
        warm process, with no fault since) is not checked again: that check's result counts."""
        seconds = seconds or float(self.profile.section("checks")["sample_s"])
        scratch = Path(tempfile.mkdtemp(prefix="examrec-check-"))
        results: list[CheckResult] = []
        try:
            now = SessionClock.start_now()
            clock = SessionClock(now.start_ns + CHECK_LEAD_NS, now.wall_anchor_ns + CHECK_LEAD_NS)
            pending = {}
            for name, rt in self.streams.items():
                if rt.ready and not (fresh_within_s is not None and rt.check_is_fresh(fresh_within_s)):
                    rt.check = None
                    rt.cmd_q.put(RunCheck(clock, seconds, str(scratch / name)))
                    pending[name] = rt
            wall0, cpu0 = time.monotonic(), time.process_time()
            deadline = wall0 + seconds + 15
            while any(rt.check is None for rt in pending.values()) and time.monotonic() < deadline:
                self._pump(timeout=0.2)
                for name, rt in pending.items():
                    # A stream process that ended (killed, crashed) will not answer: its check has
                    # failed now, not when the deadline passes.
                    if rt.check is None and rt.process is not None and not rt.process.is_alive():
                        rt.check = CheckDone(name, seconds, error=f"its stream process ended (exit code "
                                                                  f"{rt.process.exitcode}) during the check")
            # The recorder's own share (this process: messages, sensors, the clock) while the streams
            # ran; nothing to measure when every stream's check was fresh and none ran now.
            waited = time.monotonic() - wall0
            recorder_share = (time.process_time() - cpu0) / waited / (os.cpu_count() or 1) if waited >= 0.25 else 0.0
            bytes_per_s = 0.0
            measured: list[tuple[float, CheckDone]] = []
            for spec in self.profile.streams:
                rt = self.streams[spec.name]
                if not rt.ready:
                    results.append(CheckResult(f"camera {spec.name}", False, rt.ready_message))
                    continue
                res = rt.check or CheckDone(spec.name, seconds, error="did not answer the check in time")
                results.append(stream_check(spec.name, spec.fps, res))
                measured.append((spec.fps, res))
                bytes_per_s += res.bytes / (res.seconds or seconds)
                if spec.audio:
                    results.append(audio_check(spec.name, res))
        finally:
            if all(rt.check is not None for rt in pending.values()):
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                # Interrupted (SIGTERM, Ctrl-C) or a stream that did not answer: it may still be
                # writing its check here, and would make the folder again after we removed it.
                # It goes once the stream processes have ended (remove_check_scratch).
                self.check_scratch_left.append(scratch)
        processor = processor_check(measured, float(self.profile.section("checks")["max_cpu_percent"]),
                                    recorder_cpu_share=recorder_share)
        if processor is not None:
            results.append(processor)
        results += self.sensor_checks()
        results.append(writable_check(self.out_root))
        if bytes_per_s > 0:
            results.append(disk_check(self.out_root, bytes_per_s, float(self.profile.section("checks")["min_record_h"])))
        results += power_checks()
        if self.out_root.exists():
            results.append(upload_check(self.out_root, list(self.profile.section("upload")["holidays"])))
        results.append(CheckResult("device key", True, f"signing key loaded ({self.key_fingerprint})"))
        mandatory = self.profile.section("checks")["mandatory"]
        if mandatory is not None:
            for r in results:
                r.mandatory = any(r.check.startswith(m) for m in mandatory)
        self.checks = results
        # checking -> ready: what `status` says between the checks and the start
        self.state = "ready" if not failed_mandatory(results) else "checking"
        return results

    def remove_check_scratch(self) -> None:
        """Remove the check folders a stream process could still have been writing into; call
        once every stream process has ended."""
        while self.check_scratch_left:
            shutil.rmtree(self.check_scratch_left.pop(), ignore_errors=True)

    def sensor_checks(self) -> list[CheckResult]:
        """GPS fix and clock offset, pedal heartbeat (when the profile has them)."""
        return self.sensors.checks() if self.sensors is not None else []

    def failed_checks(self) -> list[CheckResult]:
        return failed_mandatory(getattr(self, "checks", []))

    # control socket ------------------------------------------------------------------------
    def dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request (runs on the control thread)."""
        cmd = req.get("cmd")
        try:
            if cmd == "ping":
                return {"ok": True}
            if cmd == "status":
                return {"ok": True, **self.status()}
            if cmd == "pause":
                return {"ok": True, **self.pause(str(req.get("reason") or "").strip(),
                                                 str(req.get("plate") or "").strip())}
            if cmd == "resume":
                return {"ok": True, **self.resume(str(req.get("plate") or "").strip())}
            if cmd == "stop":
                if self.state not in ("recording", "paused"):
                    raise IllegalTransition(f"cannot stop: the session is {self.state}")
                self.request_stop(str(req.get("reason") or "examrec stop"))
                self.state = "stopping"
                return {"ok": True, "state": "stopping", "session": str(self.session_dir)}
            if cmd == "photo":
                return {"ok": True, **self.photo(req.get("role"), req.get("stream"))}
        except IllegalTransition as exc:
            return {"ok": False, "error": str(exc), "state": self.state}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def status(self) -> dict[str, Any]:
        now = time.monotonic_ns()
        streams = []
        for name, rt in self.streams.items():
            st = rt.stats
            health = "ok"
            if rt.stalled or (st is not None and st.fault) or not rt.ready:
                health = "FAULT"
            elif st is not None and st.audio_fault:
                health = "FAULT (audio)"
            streams.append({"stream": name, "state": self.stream_state(rt), "fps": rt.fps,
                            "frames": st.encoded if st else 0, "dropped": st.dropped if st else 0,
                            "health": health, "mb": round(st.bytes / 1e6, 1) if st else 0.0})
        free = shutil.disk_usage(self.out_root).free if self.out_root.exists() else None
        out = {"state": self.state, "stage": self.stage, "session_id": self.session_id,
               "session": str(self.session_dir), "profile": self.profile.name,
               "elapsed_s": round(self.clock.pts_s(now), 1) if self.clock else 0.0,
               "elapsed": format_duration(self.clock.pts_s(now)) if self.clock else "00:00:00",
               "streams": streams, "disk_free_gb": None if free is None else round(free / 1e9, 2),
               "details": self.details, "pause_reasons": list(self.profile.section("exam")["pause_reasons"]),
               "demo": self.profile.kind == "replay"}
        if self.pause_at_ns is not None and self.clock is not None:
            out["paused_at"] = self.clock.wall_local(self.pause_at_ns).strftime("%H:%M:%S")
        out.update(self.sensor_status())
        out["uploads_overdue"] = self.overdue_uploads()
        return out

    def stream_state(self, rt) -> str:
        """One word for the examiner: LIVE (recording), PAUSED (the session is between stages),
        STALLED (the camera gives no frames), LOST (the stream's process or device is gone)."""
        if not rt.ready or rt.stalled or (rt.process is not None and not rt.process.is_alive() and not rt.done):
            return "LOST"
        if rt.stats is not None and rt.stats.fault:
            return "STALLED"
        if self.state == "paused":
            # During the pause's banner the stream still records: PAUSED once it has stopped.
            return "PAUSED" if rt.stats is not None and rt.stats.paused else "LIVE"
        if self.state in ("recording", "stopping"):
            return "LIVE"
        return self.state.upper()

    def overdue_uploads(self) -> list[str]:
        """Ids of earlier sessions in the output folder past their upload deadline (looked up at
        most once a minute: status is asked every second)."""
        cached = getattr(self, "_overdue_cache", None)
        if cached is not None and time.monotonic() - cached[0] < 60:
            return cached[1]
        try:
            late = [o.session_id for o in overdue_now(self.out_root, list(self.profile.section("upload")["holidays"]))]
        except (OSError, ValueError) as exc:
            log.warning("cannot look for sessions overdue for upload in %s: %s", self.out_root, exc)
            late = []
        self._overdue_cache = (time.monotonic(), late)
        return late

    def sensor_status(self) -> dict[str, Any]:
        return self.sensors.status() if self.sensors is not None else {}

    # stages ------------------------------------------------------------------------------
    def pause(self, reason: str, plate: str = "") -> dict[str, Any]:
        """End the current stage (UA II.3): a banner on every stream for the last seconds, then
        the stage's segments close; the time, reason and plate go to the event log. The plate,
        when not given, is the exam's (its details)."""
        with self._lock:
            if self.state != "recording":
                raise IllegalTransition(f"cannot pause: the session is {self.state}")
            plate = plate or str(self.details.get("plate") or "")
            if not reason or not plate:
                raise IllegalTransition("pause needs the reason and the vehicle's plate (--reason, --plate; "
                                        "the plate defaults to the exam's)")
            assert self.clock is not None and self.events is not None
            # The pause rule: the banner shows for pause_banner_s, then the stage ends.
            lead_ns = round(self.profile.pause_banner_s * NS_PER_S)
            at = time.monotonic_ns() + lead_ns
            when = self.clock.wall_local(at).strftime("%H:%M:%S")
            banner = f"PAUSE {when} {reason} {plate}"
            for rt in self.streams.values():
                rt.cmd_q.put(Pause(at, banner, lead_ns))
            self.pause_at_ns = at
            self.state = "paused"
            self.events.emit("pause", capture_ns=at, stage=self.stage, reason=reason, plate=plate, banner=banner)
            stage = self.manifest["stages"][-1]
            stage["end_pts_s"] = round(self.clock.pts_s(at), 6)
            self.manifest["state"] = "paused"
            self._write_manifest()
            return {"state": "paused", "stage": self.stage, "paused_at": when, "banner": banner,
                    "banner_s": self.profile.pause_banner_s}

    def resume(self, plate: str = "") -> dict[str, Any]:
        """Start the next stage: new segments, a banner for the first seconds, a resume event.

        A resume while the pause's banner still shows (before the pause takes effect) cancels
        the pause: the stage goes on without a gap, and the resume event says so."""
        pause_at = self.pause_at_ns
        if self.state == "paused" and pause_at is not None:
            left = pause_at - time.monotonic_ns()
            if 0 <= left < CANCEL_MARGIN_NS:
                # Too close to the pause instant to be sure every stream hears the cancel before
                # it: let the pause happen, then resume normally.
                time.sleep(left / NS_PER_S + 0.1)
        with self._lock:
            if self.state != "paused":
                raise IllegalTransition(f"cannot resume: the session is {self.state}, not paused")
            plate = plate or str(self.details.get("plate") or "")
            if not plate:
                raise IllegalTransition("resume needs the vehicle's plate (--plate; it defaults to the exam's)")
            assert self.clock is not None and self.events is not None and self.pause_at_ns is not None
            now = time.monotonic_ns()
            when = self.clock.wall_local(now).strftime("%H:%M:%S")
            until = now + round(self.profile.pause_banner_s * NS_PER_S)
            if now < self.pause_at_ns:
                banner = f"RESUME {when} {plate}  STAGE {self.stage}"
                for rt in self.streams.values():
                    # A resume of the stage going on withdraws the pause (see the stage gate).
                    rt.cmd_q.put(Resume(self.stage, banner, until))
                self.pause_at_ns = None
                self.state = "recording"
                self.events.emit("resume", capture_ns=now, stage=self.stage, plate=plate, cancelled_pause=True)
                self.manifest["stages"][-1]["end_pts_s"] = None
                self.manifest["state"] = "recording"
                self._write_manifest()
                return {"state": "recording", "stage": self.stage, "resumed_at": when, "cancelled_pause": True}
            self.stage += 1
            banner = f"RESUME {when} {plate}  STAGE {self.stage}"
            for rt in self.streams.values():
                rt.cmd_q.put(Resume(self.stage, banner, until))
            self.pause_at_ns = None
            self.state = "recording"
            self.events.emit("resume", capture_ns=now, stage=self.stage, plate=plate)
            self.manifest["stages"].append({"stage": self.stage, "start_pts_s": round(self.clock.pts_s(now), 6),
                                            "end_pts_s": None})
            self.manifest["state"] = "recording"
            self._write_manifest()
            return {"state": "recording", "stage": self.stage, "resumed_at": when}

    # stills ------------------------------------------------------------------------------
    def photo(self, role: str | None = None, stream: str | None = None) -> dict[str, Any]:
        """A still from a stream (the profile's candidate camera unless told otherwise)."""
        if self.state not in ("recording", "paused"):
            raise IllegalTransition(f"cannot take a photo: the session is {self.state}")
        photos = self.profile.section("photos")
        name = stream or photos.get(role or "candidate") or self.profile.streams[0].name
        if name not in self.streams:
            raise IllegalTransition(f"no stream named {name!r}")
        self._photo_no = getattr(self, "_photo_no", 0) + 1
        file = photo_name(self._photo_no, role or name)
        self.streams[name].cmd_q.put(TakePhoto(file, role))
        return {"file": file, "stream": name}

    def take_start_photos(self) -> None:
        photos = self.profile.section("photos")
        for role in ("candidate", "examiner"):
            if photos.get(role):
                self.photo(role=role, stream=photos[role])

    # watchdog ----------------------------------------------------------------------------
    def watch_streams(self) -> None:
        """A stream process that stops reporting (hung driver, stopped process) is a fault
        within seconds; it is cleared when the stream reports again."""
        if self.clock is None or self.events is None:
            return
        now = time.monotonic()
        for name, rt in self.streams.items():
            if rt.done or not rt.ready or rt.last_seen is None:
                continue
            if not rt.stalled and now - rt.last_seen > WATCHDOG_S:
                rt.stalled = True
                at = time.monotonic_ns() - round((now - rt.last_seen) * NS_PER_S)
                self.events.emit("fault", stream=name, device=f"stream {name}",
                                 message=f"stream process not responding for {WATCHDOG_S:g} s")
                self._gap_open(name, self.clock.pts_s(at), "stream not responding")
            elif rt.stalled and now - rt.last_seen <= WATCHDOG_S:
                rt.stalled = False
                self.events.emit("recovered", stream=name, device=f"stream {name}")
                self._gap_close(name, self.clock.pts_s(time.monotonic_ns()))
