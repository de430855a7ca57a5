"""Read a session folder's manifest and summarise it for people (tables) and programs (JSON)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from sessions.evidence.chain import iter_records
from core.clock import parse_iso


class NotASession(Exception):
    """The path is not a session folder (no readable manifest.json)."""


def load_manifest(session: Path) -> dict[str, Any]:
    path = Path(session) / "manifest.json"
    if not Path(session).is_dir():
        raise NotASession(f"{session}: not a folder; give the session folder (<out>/<YYYY-MM-DD>/<session-id>)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotASession(f"{session}: no manifest.json here; give the session folder "
                          f"(<out>/<YYYY-MM-DD>/<session-id>)") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than any manifest
        raise NotASession(f"{path}: not valid JSON ({str(exc)[:200]}); run `examrec repair {session}`") from None
    except OSError as exc:
        raise NotASession(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("session_id"), str):
        raise NotASession(f"{path}: not an examrec session manifest (no session_id); check the folder, "
                          f"or run `examrec verify {session}`")
    return manifest


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
    """Everything `examrec info` shows, as one JSON-able dict. Raises NotASession (one line) for a
    folder that is no session and for a manifest too damaged to summarise."""
    session = Path(session)
    m = load_manifest(session)
    try:
        return _summary(session, m)
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
        raise NotASession(f"{session / 'manifest.json'}: damaged, cannot be summarised ({type(exc).__name__}: "
                          f"{str(exc)[:120]}); check it with `examrec verify {session}`") from None


def _summary(session: Path, m: dict[str, Any]) -> dict[str, Any]:
    events_path = session / "events.jsonl"
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
    }
