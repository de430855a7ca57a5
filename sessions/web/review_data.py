"""What the review page needs to know about one session, read from its folder (read-only).

The page (``review/review.js``) gets one JSON object, written into ``session-data.js`` as
``window.REVIEW_DATA = {...}`` so that a page opened from file:// reads it without fetch (which
browsers refuse on file:// pages). It holds:

* the session: id, local clock (wall anchor and UTC offset), stages with each pause's reason;
* every stream with its segments and, per segment, the byte ranges of the init part and of each
  fragment with its first video timestamp and that of its keyframe (if any): the page appends
  exactly those bytes to a Media Source (served) so every camera plays on the session clock;
* the gaps (a stream's fault, a stage pause) the page shows as gaps with their reason;
* the events, the GPS speed and route, the pedal actuations;
* the result of ``examrec verify`` on the folder, computed when the data is built.
"""
from __future__ import annotations

import bisect
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sessions.evidence.verify import NotASession, verify_session

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

DATA_FILE = "session-data.js"
# A second stream of fixes (GGA) carries a speed gpsd computed from position jitter; the receiver's
# own speed comes with a course ("track"), so a session that has those uses only those.
SPEED_FROM_RECEIVER_KEY = "track"
# A gap between one video sample's end and the next one's start that counts as a hole (a 90 kHz
# tick is 11 us; a guessed length leaves half a frame).
HOLE_MIN_S = 0.0005
# A frame shown this many frame intervals or longer is a long one (a stall), not jitter.
LONG_FRAME = 1.5
# The next segment goes on from a segment's last frame when it starts within this many frames
# (review.js plays on across it the same way).
CONTINUES_FRAMES = 2.5


@dataclass
class ReviewOptions:
    """How the page is set up: where the session folder is relative to the page, and extras."""

    base: str                           # URL prefix of the session's files, e.g. "<session id>/"
    tile_url: str | None = None         # e.g. "https://tiles.office.lan/{z}/{x}/{y}.png"
    clip: tuple[float, float] | None = None   # a clip kit: the range it covers
    served: bool = False                # the local server answers /clip.zip


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines only: a line without its newline is a torn write (FORMAT.md)."""
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    data = path.read_bytes()
    for line in data.split(b"\n")[:-1]:
        try:
            out.append(json.loads(line))
        except ValueError:
            log.warning("%s: a line that is not JSON is left out of the page", path.name)
    return out


def _codec_string(stream: av.video.stream.VideoStream) -> str | None:
    """RFC 6381 codec name (avc1.PPCCLL) from the avcC record, which Media Source needs; None for
    other codecs (the page then plays that camera's files directly)."""
    extra = stream.codec_context.extradata or b""
    if stream.codec_context.name == "h264" and len(extra) >= 4 and extra[0] == 1:
        return f"avc1.{extra[1]:02x}{extra[2]:02x}{extra[3]:02x}"
    return None


def segment_index(path: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Byte ranges of a segment's init part and fragments, with each fragment's first video time.

    ``records`` are the segment's fragments.jsonl records; the init range leaves out ``skip``
    (the 8 bytes a closed file turns into an ``mdat`` header, which a Media Source must not see).
    """
    init = next((r for r in records if r.get("kind") == "init"), None)
    frags = sorted((r for r in records if r.get("kind") == "fragment"), key=lambda r: r["offset"])
    info: dict[str, Any] = {"init": [], "fragments": [], "codecs": None}
    if init is None or not frags:
        return info
    import av  # here: only a page that indexes segments needs PyAV, not every command that imports this module
    skip = init.get("skip") or [init["end"], init["end"]]
    info["init"] = [[init["offset"], skip[0]], [skip[1], init["end"]]]
    # Demux what the page appends to a Media Source (the init part, then every recorded
    # fragment), not the file: a closed file's index at its end gives a frame cut short by an
    # early fragment end its true length, the fragments the browser plays do not (see _stills).
    fed = FedRanges(path, info["init"] + [[r["offset"], r["end"]] for r in frags])
    starts = fed.starts[len(info["init"]):]
    first: list[float | None] = [None] * len(frags)
    key: list[float | None] = [None] * len(frags)
    codecs: list[str] = []
    samples: list[tuple[float, float]] = []   # each video sample's start and end
    try:
        with fed, av.open(fed, "r", format="mp4") as container:
            video = container.streams.video[0]
            video_codec = _codec_string(video)
            if video_codec:
                codecs.append(video_codec)
                if container.streams.audio:
                    codecs.append("mp4a.40.2")   # the recorder's audio is AAC-LC
            for packet in container.demux(video):
                if packet.pts is None or packet.pos is None or packet.pos < 0:
                    continue
                i = bisect.bisect_right(starts, packet.pos) - 1
                if i < 0:
                    continue
                t = float(packet.pts * packet.time_base)
                samples.append((t, t + float((packet.duration or 0) * packet.time_base)))
                if first[i] is None or t < first[i]:
                    first[i] = t
                if packet.is_keyframe and (key[i] is None or t < key[i]):
                    key[i] = t
    except (av.error.InvalidDataError, OSError) as exc:
        # A fragment the log lists that is not what it says (a file changed since): the frames
        # before it are indexed, which is what plays.
        log.info("%s: indexed up to a damaged part (%s)", path, exc)
    info["codecs"] = ",".join(codecs) if codecs else None
    info["stills"] = _stills(samples)
    if samples:
        last = max(samples)
        info["last_frame"] = [round(last[0], 6), round(last[1], 6)]
    info["fragments"] = [[r["offset"], r["end"], round(t, 6), None if k is None else round(k, 6)]
                         for r, t, k in zip(frags, first, key) if t is not None]
    return info


class FedRanges(io.RawIOBase):
    """Byte ranges of one file read as one stream, in the order given: what a Media Source is
    fed. ``starts[i]`` is where range i begins in that stream."""

    def __init__(self, path: Path, ranges: list[list[int]]):
        super().__init__()
        self._file = open(path, "rb")
        self._ranges = [(a, max(a, b)) for a, b in ranges]
        self.starts: list[int] = []
        total = 0
        for a, b in self._ranges:
            self.starts.append(total)
            total += b - a
        self._size = total
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        done = 0
        i = bisect.bisect_right(self.starts, self._pos) - 1   # the range the position is in
        while 0 <= i < len(self._ranges) and done < len(view):
            a, b = self._ranges[i]
            inside = self._pos - self.starts[i]
            if inside < b - a:
                self._file.seek(a + inside)
                got = self._file.readinto(view[done:done + min(len(view) - done, b - a - inside)])
                if not got:
                    break  # the file is shorter than its log says: the stream ends here
                done += got
                self._pos += got
            else:
                i += 1
        return done

    def close(self) -> None:
        self._file.close()
        super().close()


def _stills(samples: list[tuple[float, float]]) -> list[list[float]]:
    """The frames a camera shows for longer than its frame interval: ``[start, end, next start]``.

    A stalled camera's last frame lasts until the next one (end == next start). A fragment ended
    early for that late frame (muxer.segment's backstop) gives it a guessed, short length
    instead, leaving a hole (end < next start) where a browser has nothing and, asked for an
    instant in it, shows the next frame, captured after that instant. The page seeks inside the
    frame before a hole, holds that frame while playing across one, and does not take a long
    frame for a camera that fell behind."""
    samples = sorted(samples)
    gaps = sorted(after - t for (t, _), (after, _) in zip(samples, samples[1:]))
    if not gaps:
        return []
    interval = gaps[len(gaps) // 2]
    return [[round(t, 6), round(end, 6), round(after, 6)]
            for (t, end), (after, _) in zip(samples, samples[1:])
            if after - end > HOLE_MIN_S or after - t > LONG_FRAME * interval]


def _holes_between(segments: list[dict[str, Any]], fps: float) -> None:
    """A segment's last frame is closed with a guessed, short length too (nothing follows it in
    that file): where the next segment goes on at the next frame, the hole up to it is listed
    with the segment's stills."""
    for seg, after in zip(segments, segments[1:]):
        last, start = seg.get("last_frame"), after.get("first_pts_s")
        if last and start is not None and last[1] + HOLE_MIN_S < start <= last[0] + CONTINUES_FRAMES / fps:
            seg.setdefault("stills", []).append([last[0], last[1], round(start, 6)])


def _pause_reasons(stages: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The time between two stages, with the reason the examiner gave for the pause."""
    pauses = [e for e in events if e.get("type") == "pause"]
    out = []
    for before, after in zip(stages, stages[1:]):
        end = before.get("end_pts_s")
        if end is None:
            continue
        reason = min(pauses, key=lambda e: abs(float(e.get("pts_s") or 0) - end), default={})
        out.append({"start_pts_s": end, "end_pts_s": after["start_pts_s"], "reason": reason.get("reason") or "",
                    "plate": reason.get("plate")})
    return out


def _speeds(telemetry: list[dict[str, Any]]) -> list[list[float]]:
    fixes = [t for t in telemetry if t.get("type") == "gps" and "speed" in t and t.get("pts_s") is not None]
    own = [t for t in fixes if SPEED_FROM_RECEIVER_KEY in t]
    return [[round(t["pts_s"], 3), round(t["speed"] * 3.6, 2)] for t in (own or fixes)]


def _route(telemetry: list[dict[str, Any]]) -> list[list[float]]:
    return [[round(t["pts_s"], 3), t["lat"], t["lon"]] for t in telemetry
            if t.get("type") == "gps" and t.get("mode", 2) >= 2 and "lat" in t and "lon" in t]


def _event_view(e: dict[str, Any]) -> dict[str, Any]:
    """An event for the list: its fields as stored, without the chain hash."""
    return {k: v for k, v in e.items() if k != "prev_sha256"}


def verification(root: Path) -> dict[str, Any]:
    """The result of ``examrec verify`` on the folder, as the page shows it."""
    try:
        report = verify_session(root)
    except NotASession as exc:
        return {"ok": False, "untouched": False, "state": None, "problems": [
            {"file": "", "kind": "not a session", "detail": str(exc)}], "verified": {}, "signed_by": None}
    result = report.to_json()
    result.pop("path", None)
    return result


def build_review_data(root: Path, options: ReviewOptions, *, verify: dict[str, Any] | None = None,
                      present: set[str] | None = None) -> dict[str, Any]:
    """Everything the page shows about the session in ``root``.

    ``verify``: a verification result computed elsewhere (else it is computed here);
    ``present``: for a clip kit, the segment files it holds (the others are listed as left out).
    """
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    events = _read_jsonl(root / "events.jsonl")
    telemetry = _read_jsonl(root / (manifest.get("telemetry") or {}).get("file", "telemetry.jsonl"))
    streams = []
    for s in manifest.get("streams") or []:
        records_by_file: dict[str, list[dict[str, Any]]] = {}
        for r in _read_jsonl(root / s["name"] / "fragments.jsonl"):
            records_by_file.setdefault(r.get("file", ""), []).append(r)
        segments = []
        for seg in s.get("segments") or []:
            entry = {k: seg.get(k) for k in ("file", "first_pts_s", "last_pts_s", "stage", "frames", "closed")}
            if present is not None and seg["file"] not in present:
                entry["absent"] = True
            elif (root / seg["file"]).is_file():
                entry.update(segment_index(root / seg["file"], records_by_file.get(seg["file"], [])))
            else:
                entry["absent"] = True
            segments.append(entry)
        _holes_between(segments, s.get("fps") or 25)
        streams.append({"name": s["name"], "width": s.get("width"), "height": s.get("height"),
                        "fps": s.get("fps") or 25, "audio": bool(s.get("audio")), "source": s.get("source"),
                        "gaps": s.get("gaps") or [], "segments": segments})
    stages = manifest.get("stages") or []
    ends = [st.get("end_pts_s") for st in stages if st.get("end_pts_s") is not None]
    ends += [seg["last_pts_s"] for s in streams for seg in s["segments"] if seg.get("last_pts_s") is not None]
    duration = max(ends, default=0.0)
    pedals = [{"pedal": e.get("pedal"), "start_pts_s": e.get("start_pts_s"),
               "end_pts_s": e.get("end_pts_s") if e.get("end_pts_s") is not None else duration,
               "peak_percent": e.get("peak_percent"), "interrupted": bool(e.get("interrupted"))}
              for e in events if e.get("type") == "pedal" and e.get("start_pts_s") is not None]
    return {
        "format": "examrec-review/1",
        "session_id": manifest.get("session_id") or root.name,
        "profile": manifest.get("profile"), "state": manifest.get("state"),
        "started_at": manifest.get("started_at"), "ended_at": manifest.get("ended_at"),
        # format 2 writes the stamps as decimal strings, format 1 as numbers
        "wall_anchor_ms": int((manifest.get("clock") or {}).get("wall_anchor_ns", 0)) / 1e6,
        "utc_offset": (manifest.get("clock") or {}).get("utc_offset") or "+00:00",
        "details": manifest.get("details") or {},
        "duration_s": duration,
        "stages": stages, "pauses": _pause_reasons(stages, events),
        "streams": streams,
        "sensor_gaps": manifest.get("sensor_gaps") or {},
        "events": [_event_view(e) for e in events if e.get("type") not in ("segment",)],
        "speed": _speeds(telemetry), "route": _route(telemetry), "pedals": pedals,
        "verify": verify if verify is not None else verification(root),
        "base": options.base, "tile_url": options.tile_url,
        "clip": list(options.clip) if options.clip else None, "served": options.served,
    }


def data_script(data: dict[str, Any]) -> str:
    """``session-data.js``: the data as a script a file:// page can load with a <script> tag."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # "</" inside a string would end an inline script; escaped it is the same JSON.
    return "window.REVIEW_DATA = " + text.replace("</", "<\\/") + ";\n"
