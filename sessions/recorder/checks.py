"""Pre-exam checks (CAP-9): every device works, recording really runs in real time, the clock is
right, there is power and room on the disk. Each result names the device and says why in plain
words; `record` refuses to start on a failed mandatory check unless --force."""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core import durable
from sessions.evidence.summary import format_table
from sessions.recorder.messages import CheckDone

POWER_SUPPLY = Path("/sys/class/power_supply")
MIN_BATTERY_PERCENT = 20
SILENT_DBFS = -60.0


@dataclass
class CheckResult:
    check: str        # what was checked: "camera cabin", "microphone", "disk", ...
    ok: bool
    detail: str       # plain words: what was measured, or why it failed and what to do
    mandatory: bool = True
    figures: dict[str, float] | None = None  # what was measured, for programs (`check --json`)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.figures is None:
            del out["figures"]
        return out


def stream_check(name: str, fps: float, result: CheckDone) -> CheckResult:
    """A stream delivered frames at its rate through the whole pipeline (the encoder kept up)."""
    if result.error:
        return CheckResult(f"camera {name}", False, result.error)
    seconds = result.seconds
    got = result.frames / seconds if seconds else 0.0
    if got < 0.9 * fps:
        why = "no frame at all: is it connected? (`examrec devices`)" if result.frames == 0 else \
            f"only {got:.1f} fps of {fps:g} through the recorder ({result.dropped} dropped): the camera or " \
            f"this computer is too slow for the profile"
        return CheckResult(f"camera {name}", False, why)
    return CheckResult(f"camera {name}", True, f"{got:.1f} fps of {fps:g}, encoded in real time, "
                                               f"{8 * result.bytes / seconds / 1e6:.2f} Mbit/s")


def audio_check(owner: str, result: CheckDone) -> CheckResult:
    """The sound that came with the owning stream's check is not silent."""
    level = result.audio_dbfs
    if level is None:
        return CheckResult("microphone", False, f"no sound arrived with stream {owner}: is the microphone connected?")
    if level <= SILENT_DBFS:
        return CheckResult("microphone", False, f"silent ({level:.0f} dBFS): check it is switched on and not muted")
    return CheckResult("microphone", True, f"level {level:.0f} dBFS")


def processor_check(streams: list[tuple[float, CheckDone]], max_percent: float,
                    cores: int | None = None, recorder_cpu_share: float = 0.0) -> CheckResult | None:
    """Whether this computer records the profile for a whole exam without dropping frames.

    A 2-s check that keeps up says little about ten minutes: a load near the machine's capacity
    keeps up on average and still drops a frame whenever a keyframe, an fsync or another process
    comes at a bad moment and a queue overflows. So the verdict is on the headroom: what every
    stream's frames cost in the check (CPU seconds a frame, all of its process's threads) times
    its rate, plus the recorder's own share, as a share of all the cores, must stay within
    ``max_percent`` (`[checks] max_cpu_percent`). ``streams`` pairs each stream's target rate
    with its check; a stream whose check measured nothing does not count (its own check fails).
    None when no stream was measured."""
    cores = cores or os.cpu_count() or 1
    costs = [(fps, r.cpu_s_per_frame) for fps, r in streams if r.cpu_s_per_frame is not None and not r.error]
    if not costs:
        return None
    need = 100 * (sum(fps * c for fps, c in costs) / cores + recorder_cpu_share)
    where = f"of this computer's {cores} core{'s' if cores != 1 else ''}"
    figures = {"cpu_percent": round(need, 1), "max_cpu_percent": float(max_percent), "cores": float(cores)}
    if need > max_percent:
        return CheckResult("processor", False,
                           f"the streams need {need:.0f} % {where}, more than the {max_percent:g} % with which "
                           f"it records a whole exam without dropping frames: lower a stream's size or rate, "
                           f"use a faster computer, or close what else runs on it", figures=figures)
    return CheckResult("processor", True, f"the streams need {need:.0f} % {where} (at most {max_percent:g} %)",
                       figures=figures)


def disk_check(out_root: Path, bytes_per_s: float, min_hours: float) -> CheckResult:
    usage = shutil.disk_usage(out_root)
    need = bytes_per_s * min_hours * 3600
    hours = usage.free / bytes_per_s / 3600 if bytes_per_s > 0 else float("inf")
    detail = (f"{usage.free / 1e9:.1f} GB free on {out_root}: {hours:.1f} h at the measured "
              f"{8 * bytes_per_s / 1e6:.1f} Mbit/s (need {min_hours:g} h)")
    if usage.free < need:
        return CheckResult("disk", False, detail + "; upload and free space first (`examrec upload`)")
    return CheckResult("disk", True, detail)


def writable_check(out_root: Path) -> CheckResult:
    probe = Path(out_root) / ".examrec-write-test"
    try:
        Path(out_root).mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            durable.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        return CheckResult("output folder", False, f"{out_root} is not writable: {exc.strerror}")
    return CheckResult("output folder", True, f"{out_root} writable")


def power_checks(root: Path = POWER_SUPPLY) -> list[CheckResult]:
    """Batteries and mains from sysfs; nothing to say (and nothing failed) where there are none."""
    results = []
    if not root.is_dir():
        return results
    for dev in sorted(root.iterdir()):
        def read(name: str) -> str | None:
            try:
                return (dev / name).read_text().strip()
            except OSError:
                return None
        kind = read("type")
        if kind == "Battery":
            cap = read("capacity")
            status = read("status") or "Unknown"
            if cap is None:
                continue
            ok = int(cap) >= MIN_BATTERY_PERCENT or status in ("Charging", "Full")
            results.append(CheckResult(f"battery {dev.name}", ok, f"{cap} % ({status.lower()})" +
                                       ("" if ok else f": below {MIN_BATTERY_PERCENT} %, charge it before the exam")))
        elif kind == "Mains":
            online = read("online") == "1"
            results.append(CheckResult(f"power {dev.name}", True, "on mains" if online else "not on mains",
                                       mandatory=False))
    return results


def overdue_now(out_root: Path, holidays: list[str]) -> list:
    """Sessions in ``out_root`` past their upload deadline (the end of the next working day after
    the exam), as of now; raises OSError or ValueError when the folder cannot be read."""
    from datetime import datetime, timezone
    from sessions.archive.upload import overdue_sessions
    return overdue_sessions(out_root, datetime.now(timezone.utc), holidays)


def upload_check(out_root: Path, holidays: list[str]) -> CheckResult:
    """Sessions still on this recorder after their upload deadline. Not mandatory: an exam may
    go on, but the officer must be told."""
    try:
        late = overdue_now(out_root, holidays)
    except (OSError, ValueError) as exc:
        return CheckResult("uploads", False, f"cannot read the sessions in {out_root}: {exc}", mandatory=False)
    if not late:
        return CheckResult("uploads", True, "no session overdue for upload", mandatory=False)
    worst = max(late, key=lambda o: o.overdue_by)
    return CheckResult("uploads", False, f"{len(late)} session(s) overdue for upload (oldest {worst.session_id}, "
                       f"due {worst.due:%Y-%m-%d %H:%M}): run `examrec upload`", mandatory=False)


def failed_mandatory(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.mandatory and not r.ok]


def results_table(results: list[CheckResult]) -> str:
    rows = [{"check": r.check, "result": "OK" if r.ok else ("FAIL" if r.mandatory else "warn"), "detail": r.detail}
            for r in results]
    return format_table(rows, ["check", "result", "detail"])
