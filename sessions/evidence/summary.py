"""Read a session folder's manifest and summarise it for people (tables) and programs (JSON)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from sessions.evidence.chain import iter_records
from sessions.evidence.layout import EVENTS_NAME, MANIFEST_NAME, ManifestError, read_manifest, session_root
from core.clock import parse_iso


def stream_rows(manifest: dict[str, Any], session: Path) -> list[dict[str, Any]]:
    """Per stream: segments, frames, dropped, duration, fps, MB on disk, gaps."""
    rows = []
    for s in manifest["streams"]:
        segs = s["segments"]
        frames = sum(x["frames"] for x in segs)
        dropped = sum(x["dropped"] for x in segs)
        size = sum((Path(session) / x["file"]).stat().st_size for x in segs if (Path(session) / x["file"]).exists())
        span = sum(max(0.0, x["last_pts_s"] - x["first_pts_s"]) for x in segs)
        fps = (frames - len(segs)) / span if span > 0 else 0.0
        rows.append({"stream": s["name"], "segments": len(segs), "frames": frames, "dropped": dropped,
                     "fps": round(fps, 2), "mb": round(size / 1e6, 2), "audio": s["audio"],
                     "gaps": len(s.get("gaps", []))})
    return rows


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    for r in rows:
        lines.append("  ".join(str(r[c]).ljust(widths[c]) for c in columns))
    return "\n".join(lines)


def duration_s(manifest: dict[str, Any]) -> float | None:
    if not manifest.get("ended_at"):
        return None
    return (parse_iso(manifest["ended_at"]) - parse_iso(manifest["started_at"])).total_seconds()


def summary(session: Path) -> dict[str, Any]:
    """Everything `examrec info` shows, as one JSON-able dict; layout.ManifestError when the
    path holds no usable manifest."""
    session = session_root(session)
    m = read_manifest(session)
    if not isinstance(m.get("session_id"), str):
        raise ManifestError(f"{session / MANIFEST_NAME}: not an examrec session manifest (no session_id); "
                            f"check it with `examrec verify {session}`")
    try:
        return _summary(session, m)
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
        raise ManifestError(f"{session / MANIFEST_NAME}: damaged, cannot be summarised ({type(exc).__name__}: "
                            f"{str(exc)[:120]}); check it with `examrec verify {session}`") from None


def _summary(session: Path, m: dict[str, Any]) -> dict[str, Any]:
    events_path = session / EVENTS_NAME
    counts: Counter[str] = Counter()
    faults = []
    if events_path.exists():
        for ev in iter_records(events_path):
            counts[ev.get("type", "?")] += 1
            if ev.get("type") in ("fault", "disk_full", "error"):
                faults.append({k: ev[k] for k in ("t_utc", "type", "stream", "device", "message") if k in ev})
    return {
        "session": str(session), "session_id": m["session_id"], "profile": m["profile"], "state": m["state"],
        "started_at": m["started_at"], "ended_at": m.get("ended_at"), "duration_s": duration_s(m),
        "details": m.get("details", {}), "streams": stream_rows(m, session), "stages": m.get("stages", []),
        "events": dict(counts), "faults": faults, "repaired": m.get("repaired"),
        "sensors": m.get("sensors"), "clock_check": m.get("clock_check"),
        "signed": "signature" in m,
        "demo": bool(m.get("demo")),
    }
